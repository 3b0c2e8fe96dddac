"""The layout is the architecture: imports run one way, one module builds a Trainer, formats are chosen in one place."""

from __future__ import annotations

import ast
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("conformance", "reference_models")


def _sources(root: Path = ROOT) -> dict[str, tuple[ast.Module, str]]:
    """``{module: (syntax tree, the package its relative imports start from)}`` of the kit's packages."""
    sources = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            sources[name] = (ast.parse(path.read_text(), str(path)), ".".join(parts[:-1]))
    return sources


def _imports(tree: ast.Module, package: str, known: set[str]) -> set[str]:
    """Every kit module a module imports anywhere (top level, functions, ``__main__`` blocks)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Which kit module imports which; a package importing its own submodules is not a dependency of it."""
    sources = _sources(root)
    known = set(sources)
    return {module: {target for target in _imports(tree, package, known)
                     if target != module and not target.startswith(module + ".")}
            for module, (tree, package) in sources.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


#: Frameworks only backends (conformance.runs.<backend>) may import.
FRAMEWORKS = frozenset({"lightning", "pytorch_lightning", "lightning_fabric", "nemo", "megatron", "transformers",
                        "accelerate"})

#: Layers from the bottom; a module may import its own layer or a lower one.
_LAYERS = ("conformance.training", "conformance.predictions", "conformance.runs", "conformance.suites")


def _layer(module: str) -> int | None:
    return next((index for index, prefix in enumerate(_LAYERS) if module == prefix or module.startswith(prefix + ".")),
                None)


def _external_imports(tree: ast.Module) -> set[str]:
    """Every absolute module name a module imports anywhere."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return names


class TestArchitecture(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.sources = {module: tree for module, (tree, _) in _sources().items()}

    def test_no_import_cycle(self) -> None:
        self.assertIsNone(_cycle(import_graph()), "modules import each other in a circle")

    def test_one_module_builds_a_trainer(self) -> None:
        builders = sorted(module for module, tree in self.sources.items() if module.startswith("conformance")
                          for node in ast.walk(tree) if isinstance(node, ast.Call)
                          and getattr(node.func, "attr", getattr(node.func, "id", None)) == "Trainer")
        self.assertEqual(builders, ["conformance.runs.lightning.trainer"])

    def test_formats_are_chosen_by_the_registry_only(self) -> None:
        suffixes = {".pt", ".safetensors", ".parquet"}
        spelled = sorted({module for module, tree in self.sources.items()
                          if module.startswith("conformance") and not module.startswith("conformance.predictions.formats")
                          for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value in suffixes})
        self.assertEqual(spelled, [], "these modules pick a file format by its suffix instead of the registry")

    def test_suites_and_training_import_no_framework(self) -> None:
        """Checks and evidence are framework-neutral: Lightning, NeMo, Megatron and Transformers are the backends' business."""
        found = sorted(f"{module} imports {name}" for module, tree in self.sources.items()
                       if module.startswith(("conformance.suites", "conformance.training"))
                       for name in _external_imports(tree) if name.split(".")[0] in FRAMEWORKS)
        self.assertEqual(found, [])

    def test_imports_run_down_the_layers(self) -> None:
        """suites -> runs (the backend protocol) -> training -> nothing above; stop-and-go sees backends only
        through the protocol."""
        graph = import_graph()
        upward = sorted(f"{module} -> {target}" for module, targets in graph.items() for target in targets
                        if _layer(target) is not None and _layer(module) is not None
                        and _layer(target) > _layer(module))
        self.assertEqual(upward, [], "a lower layer imports a higher one")
        backends = sorted(target for target in graph["conformance.suites.stop_and_go"]
                          if target.startswith("conformance.runs.") and target.count(".") > 2)
        self.assertEqual(backends, [], "StopAndGoConformance must reach backends through runs.backend only")

    def test_the_layer_checks_find_violations(self) -> None:
        tree = ast.parse("import lightning.pytorch as pl\nfrom nemo import lightning\ndef f():\n    import os\n")
        self.assertEqual(sorted(_external_imports(tree)), ["lightning.pytorch", "nemo", "os"])
        self.assertGreater(_layer("conformance.suites.stop_and_go"), _layer("conformance.runs.backend"))

    def test_the_cycle_finder_finds_cycles(self) -> None:
        self.assertEqual(_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}), ["a", "b", "c", "a"])
        self.assertIsNone(_cycle({"a": {"b"}, "b": set()}))


if __name__ == "__main__":
    unittest.main()
