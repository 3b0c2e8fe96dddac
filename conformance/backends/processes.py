"""Run one function per rank in fresh Python processes, joined by torch.distributed's env:// rendezvous (gloo).

The parent writes each rank a JSON spec and starts ``python -m MODULE SPEC``; the module calls
:func:`rank_main`, which runs its function and writes a JSON result. A rank that dies (a signal, a crash) is
reported with its exit code and the tail of its output instead of a result.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RankProcess", "importable_name", "rank_main", "resolve_name", "run_ranks"]


@dataclass(frozen=True)
class RankProcess:
    """How one rank's process ended: its exit code, output tail and JSON result (None if it wrote none)."""

    rank: int
    returncode: int
    output: str
    result: dict[str, Any] | None


def run_ranks(module: str, payload: dict[str, Any], world_size: int, *, timeout: float = 300) -> list[RankProcess]:
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
            results.append(RankProcess(rank, process.returncode, output[-4000:], result))
        return results


def rank_main(run: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """The body of a rank process: ``run(spec)`` and write its result where the spec says."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    Path(spec["output"]).write_text(json.dumps(run(spec)))


def importable_name(recipe: type) -> str:
    """``module:qualname`` of the class in ``recipe``'s MRO that defines ``make_datamodule``, if importable."""
    owner = next((cls for cls in recipe.__mro__ if "make_datamodule" in vars(cls)), recipe)
    for cls in (recipe, owner):
        module = sys.modules.get(cls.__module__)
        if module is not None and resolve_name(module, cls.__qualname__) is cls and cls.__module__ != "__main__":
            return f"{cls.__module__}:{cls.__qualname__}"
    raise TypeError(
        f"{recipe.__qualname__}: multi-process checks start fresh processes that import the class defining "
        f"make_datamodule ({owner.__module__}.{owner.__qualname__}), but it cannot be imported by that name; define "
        "it at module level in an importable module"
    )


def resolve_name(module: Any, qualname: str) -> Any:
    """The object at dotted ``qualname`` inside ``module``, or None."""
    value = module
    for part in qualname.split("."):
        value = getattr(value, part, None)
    return value


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
