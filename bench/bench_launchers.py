"""Benchmark: the wall time of one conformance class under each launcher, side by side.

The reference DDP class (``TestTinyGPTDDPStopAndGo``: 3 runs of 2 ranks, the interrupted one killed after its
checkpoint) runs under the kit's launcher, under one torchrun agent and under two torchrun agents joined as two
nodes, the launchers in the same order in every repeat. Reported: the median of the repeats and every time.

    python bench/bench_launchers.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conformance.report import run_classes
from conformance.runs.launchers import LAUNCHER_ENV
from reference_models import certify
from tests.launcher_subjects import TWO_AGENTS

LAUNCHERS = {"kit": "kit", "torchrun": "torchrun", "two torchrun agents": TWO_AGENTS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in LAUNCHERS}
    for _ in range(args.repeats):
        for name, setting in LAUNCHERS.items():
            os.environ[LAUNCHER_ENV] = setting
            started = time.perf_counter()
            report = run_classes([certify.TestTinyGPTDDPStopAndGo])
            times[name].append(time.perf_counter() - started)
            if not report.ok:
                raise SystemExit(f"the class failed under {name}:\n{report.format_text()}")
    print(f"{certify.TestTinyGPTDDPStopAndGo.__name__}, {args.repeats} repeats, {os.cpu_count()} CPUs\n")
    print("| launcher | median | every repeat |\n|---|---:|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.1f} s | {', '.join(f'{value:.1f}' for value in values)} |")


if __name__ == "__main__":
    main()
