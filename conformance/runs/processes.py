"""Run one rank of a run per fresh Python process, joined by torch.distributed's env:// rendezvous (gloo).

The parent writes each rank a JSON spec and starts ``python -m MODULE SPEC``; the module's ``__main__`` calls
:func:`recipe_rank_main`, which imports the recipe class by name, runs the rank and writes its log as JSON. A rank
that dies (a signal, a crash) is reported with its exit code and the tail of its output instead of a log.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from conformance.errors import ConformanceSetupError

__all__ = ["RankLog", "failure_text", "importable_name", "recipe_rank_main", "run_recipe_ranks"]


@dataclass
class RankLog:
    """What one rank of a run did; subclasses add what their kind of run observes. JSON-serialisable."""

    rank: int = 0
    error: str | None = None
    #: The qualified names of the error's class and its bases, so checks can tell a documented error from others.
    error_types: list[str] = field(default_factory=list)
    killed_by_signal: int | None = None

    def record_failure(self, exc: BaseException) -> None:
        """Keep ``exc``, raised by the rank's run (call it inside the ``except`` block)."""
        self.error = failure_text(exc)
        self.error_types = [f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__]


def failure_text(exc: BaseException) -> str:
    """How a run's failure is reported: the exception in one line, then the traceback being handled."""
    return f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"


Log = TypeVar("Log", bound=RankLog)
Plan = TypeVar("Plan")


@dataclass(frozen=True)
class _RankProcess:
    """How one rank's process ended: its exit code, output tail and JSON result (None if it wrote none)."""

    rank: int
    returncode: int
    output: str
    result: dict[str, Any] | None


def run_recipe_ranks(module: str, recipe: type, plan: Any, world_size: int, log_type: type[Log], *,
                     timeout: float = 300) -> list[Log]:
    """Run ``plan`` of ``recipe`` in ``world_size`` processes of ``python -m module``; one log per rank."""
    payload = {"recipe": importable_name(recipe), "plan": dataclasses.asdict(plan)}
    logs = []
    for process in _run_ranks(module, payload, world_size, timeout=timeout):
        if process.result is not None:
            logs.append(log_type(**process.result))
            continue
        signal = -process.returncode if process.returncode < 0 else None
        logs.append(log_type(rank=process.rank, killed_by_signal=signal,
                             error=f"rank {process.rank} exited with {process.returncode} and wrote no log; its "
                                   f"output:\n{process.output}"))
    return logs


def recipe_rank_main(run_rank: Callable[[type, Plan, int], RankLog], plan_type: Callable[..., Plan]) -> None:
    """The body of a rank process: import the recipe, ``run_rank(recipe, plan, rank)``, write the log as JSON."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    module_name, qualname = spec["recipe"].split(":")
    recipe = _resolve_name(importlib.import_module(module_name), qualname)
    if recipe is None:
        raise ConformanceSetupError(f"{qualname} is not defined when {module_name} is imported in a fresh process; "
                                    "define the conformance class at module level, not in a function or at run time")
    log = run_rank(recipe, plan_type(**spec["plan"]), spec["rank"])
    Path(spec["output"]).write_text(json.dumps(dataclasses.asdict(log)))


def _run_ranks(module: str, payload: dict[str, Any], world_size: int, *, timeout: float) -> list[_RankProcess]:
    """Run ``python -m module`` once per rank with ``payload`` (plus ``rank``); distributed env only if > 1 rank."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="conformance-ranks-") as folder:
        processes = []
        for rank in range(world_size):
            spec = Path(folder) / f"rank{rank}.json"
            spec.write_text(json.dumps({**payload, "rank": rank, "output": str(Path(folder) / f"result{rank}.json")}))
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
            if world_size > 1:
                env.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world_size),
                            "RANK": str(rank), "LOCAL_RANK": str(rank), "GROUP_RANK": "0", "NODE_RANK": "0",
                            "LOCAL_WORLD_SIZE": str(world_size)})
            processes.append(subprocess.Popen([sys.executable, "-m", module, str(spec)], env=env,
                                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = [process.communicate(timeout=timeout)[0] for process in processes]
        results = []
        for rank, (process, output) in enumerate(zip(processes, outputs)):
            path = Path(folder) / f"result{rank}.json"
            result = json.loads(path.read_text()) if path.exists() else None
            results.append(_RankProcess(rank, process.returncode, output[-4000:], result))
        return results


def importable_name(recipe: type) -> str:
    """``module:qualname`` of the class in ``recipe``'s MRO that defines ``make_datamodule``, if importable."""
    owner = next((cls for cls in recipe.__mro__ if "make_datamodule" in vars(cls)), recipe)
    for cls in (recipe, owner):
        module = sys.modules.get(cls.__module__)
        if module is not None and _resolve_name(module, cls.__qualname__) is cls and cls.__module__ != "__main__":
            return f"{cls.__module__}:{cls.__qualname__}"
    raise TypeError(
        f"{recipe.__qualname__}: multi-process checks start fresh processes that import the class defining "
        f"make_datamodule ({owner.__module__}.{owner.__qualname__}), but it cannot be imported by that name; define "
        "it at module level in an importable module"
    )


def _resolve_name(module: Any, qualname: str) -> Any:
    """The object at dotted ``qualname`` inside ``module``, or None."""
    value = module
    for part in qualname.split("."):
        value = getattr(value, part, None)
    return value


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
