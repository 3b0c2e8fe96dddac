"""Waiting for the fresh processes of ground-truth tests (runs of an outside recipe without the kit)."""

from __future__ import annotations

import subprocess


def wait_for_all(started: dict[str, list[subprocess.Popen]], timeout_s: float = 300) -> None:
    """Wait for every process of every named run; raise with the output of each that failed."""
    failures = []
    for name, processes in started.items():
        for rank, process in enumerate(processes):
            output, _ = process.communicate(timeout=timeout_s)
            if process.returncode != 0:
                failures.append(f"run {name!r} rank {rank} exited {process.returncode}:\n{output}")
    if failures:
        raise RuntimeError("\n\n".join(failures))
