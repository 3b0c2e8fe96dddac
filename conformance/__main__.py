"""``python -m conformance certify [MODULE ...]``: run the conformance classes of modules and report.

Prints progress while the runs train and a per-check table (passed / failed / expected failure, with the largest
difference seen against its tolerance), writes ``report.json`` and ``report.xml`` (JUnit) to ``--output``, and
exits 1 when any check fails, errors or passes unexpectedly (2 when nothing could be run).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import unittest
from collections.abc import Sequence
from pathlib import Path

from conformance.errors import ConformanceSetupError
from conformance.report import run_classes
from conformance.runs.launchers import LAUNCHER_ENV, launcher_for
from conformance.suites._base import ConformanceSuite

DEFAULT_MODULES = ("reference_models.certify", "reference_models.certify_loop", "reference_models.certify_loader",
                   "reference_models.certify_hf", "reference_models.certify_attached")


def conformance_classes(module_name: str) -> list[type[unittest.TestCase]]:
    """The concrete conformance test classes a module defines or imports, in definition order."""
    module = importlib.import_module(module_name)
    return [value for _, value in vars(module).items()
            if inspect.isclass(value) and issubclass(value, unittest.TestCase) and issubclass(value, ConformanceSuite)]


def _defines(module_name: str, name: str) -> bool:
    """Whether module ``module_name`` imports and defines ``name`` (a class passed as if it were a module)."""
    try:
        return hasattr(importlib.import_module(module_name), name)
    except ImportError:
        return False


def _module_name(argument: str, parser: argparse.ArgumentParser) -> str:
    """``argument`` as a module name: a dotted name as it is, a path to a ``.py`` file below this folder converted."""
    if not argument.endswith(".py") and "/" not in argument and os.sep not in argument:
        return argument
    path = Path(argument).resolve()
    if not path.is_file():
        parser.error(f"{argument} is not a file; pass a module name such as tests.test_resume")
    try:
        relative = path.relative_to(Path.cwd())
    except ValueError:
        parser.error(f"{argument} lies outside the current folder, so it cannot be imported by name: run the command "
                     "from your repo root and pass the module name (e.g. tests.test_resume)")
    return ".".join(relative.with_suffix("").parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m conformance``; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    certify = commands.add_parser("certify", help="run conformance suites and write a report")
    certify.add_argument("modules", nargs="*", default=list(DEFAULT_MODULES),
                         help="importable modules holding conformance classes, or paths to their .py files below "
                              f"the current folder (default: {DEFAULT_MODULES[0]})")
    certify.add_argument("--output", type=Path, default=Path("conformance-report"),
                         help="folder for report.json and report.xml (default: ./conformance-report)")
    certify.add_argument("-k", dest="pattern", default=None, help="only classes whose name contains this text")
    certify.add_argument("--launcher", default=None,
                         help="how the ranks of every run start, whatever the classes set: 'kit', 'torchrun' or a "
                              f"command template ending with {{torchrun_args}} (the same as {LAUNCHER_ENV})")
    args = parser.parse_args(argv)
    if args.launcher is not None:
        os.environ[LAUNCHER_ENV] = args.launcher
        try:
            launcher_for(None)
        except ConformanceSetupError as exc:
            parser.error(f"--launcher: {exc}")

    classes = []
    for argument in args.modules:
        module_name = _module_name(argument, parser)
        try:
            classes += conformance_classes(module_name)
        except ImportError as exc:
            parent, _, name = module_name.rpartition(".")
            hint = (f"; to certify one class, pass its module and -k: certify {parent} -k {name}"
                    if parent and _defines(parent, name) else "")
            parser.error(f"cannot import {module_name!r}: {exc}; pass an importable module (run from your repo "
                         f"root or install it){hint}")
    if args.pattern:
        classes = [cls for cls in classes if args.pattern in cls.__qualname__]
    if not classes:
        print(f"no conformance classes found in {', '.join(args.modules)}"
              + (f" matching {args.pattern!r}" if args.pattern else ""), file=sys.stderr)
        return 2

    os.environ["CONFORMANCE_PROGRESS"] = "1"
    report = run_classes(classes, echo=sys.stderr)
    print(report.format_text())
    args.output.mkdir(parents=True, exist_ok=True)
    report.write_json(args.output / "report.json")
    report.write_junit(args.output / "report.xml")
    print(f"report written to {args.output / 'report.json'} and {args.output / 'report.xml'}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
