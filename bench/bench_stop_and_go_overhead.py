"""Benchmark: what certifying a recipe costs over training it, in this process and in fresh rank processes.

Per class: *bare* is the continuous, interrupted and resumed trainings without recorders or checks, in this
process (one rank) or in rank processes (two); *in-process suite* is the whole class (recorded runs and every
check) with ``resume_in_fresh_process = False``; *fresh-process suite* is the class as adopters run it, every run
in new processes forked from the kit's fork server (the resumed one included). All columns of a class alternate
``--repeats`` times in one process, so they see the same machine; minimum and median are reported.

    python bench/bench_stop_and_go_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import unittest
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conformance import StopAndGoConformance
from conformance.report import run_classes
from conformance.runs.fit import FitPlan, run_fits
from reference_models.certify import TestTinyBERTStopAndGo, TestTinyGPTDDPStopAndGo, TestTinyGPTStopAndGo
from reference_models.data import SyntheticDataModule
from reference_models.gpt import TinyGPT
from reference_models.recipes import GPTRecipe
from reference_models.transformer import TransformerConfig


class WiderGPTStopAndGo(GPTRecipe, StopAndGoConformance, unittest.TestCase):
    """The GPT recipe at width 256, 4 layers, 64 tokens (~3.3M parameters): steps of tens of milliseconds."""

    resume_in_fresh_process = False  # defined in a script run as __main__: fresh processes could not import it

    @classmethod
    def make_model(cls) -> TinyGPT:
        return TinyGPT(TransformerConfig(vocab_size=256, seq_len=64, width=256, heads=4, layers=4))

    @classmethod
    def make_datamodule(cls) -> SyntheticDataModule:
        return SyntheticDataModule(seq_len=64, vocab_size=256)


def bare_runs(cls: type) -> float:
    """Seconds for the class's three trainings without recorders (in this process when it has one rank)."""
    work = Path(tempfile.mkdtemp(prefix="bench-bare-"))
    try:
        checkpoint = str(work / "interrupted.ckpt")
        plan = {"work_dir": str(work), "max_steps": cls.num_steps, "seed": cls.seed, "record": False}
        run = {"in_process": cls.world_size() == 1, "deadline_s": 600}
        started = time.perf_counter()
        run_fits(cls, [FitPlan("continuous", **plan)], **run)
        run_fits(cls, [FitPlan("interrupted", stop_step=cls.stop_step, interruption="crash", checkpoint=checkpoint,
                               **plan)], **run)
        [resumed] = run_fits(cls, [FitPlan("resumed", resume_from=checkpoint, **plan)], **run)
        elapsed = time.perf_counter() - started
        if any(rank.error for rank in resumed):
            raise RuntimeError(next(rank.error for rank in resumed if rank.error))
        return elapsed
    finally:
        shutil.rmtree(work, ignore_errors=True)


def whole_suite(cls: type[unittest.TestCase]) -> float:
    """Seconds for set-up (the recorded runs) plus every check of the class."""
    started = time.perf_counter()
    report = run_classes([cls])
    elapsed = time.perf_counter() - started
    if not report.ok:
        raise RuntimeError(report.format_text())
    return elapsed


def in_process(cls: type) -> type | None:
    """``cls`` with its runs in this process, or None when it has several ranks (those always run in processes)."""
    if cls.world_size() > 1:
        return None
    return type(cls.__name__, (cls,), {"resume_in_fresh_process": False})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bare_runs(TestTinyGPTStopAndGo)  # warm-up: imports, first-call allocations
    columns: dict[str, Callable[[type], type | None]] = {
        "bare 3 runs": lambda cls: cls,
        "in-process suite": in_process,
        "fresh-process suite": lambda cls: None if not cls.resume_in_fresh_process else cls,
    }
    print(f"{'class':<24} {'ranks':>5} " + " ".join(f"{name + ' [s]':>22}" for name in columns)
          + f" {'fresh/bare':>10}  (min and median of {args.repeats}, columns interleaved)")
    for cls in (TestTinyGPTStopAndGo, TestTinyBERTStopAndGo, TestTinyGPTDDPStopAndGo, WiderGPTStopAndGo):
        times: dict[str, list[float]] = {name: [] for name in columns}
        for _ in range(args.repeats):
            for name, variant in columns.items():
                target = variant(cls)
                if target is not None:
                    times[name].append(bare_runs(cls) if name == "bare 3 runs" else whole_suite(target))
        for label, pick in (("min", min), ("median", statistics.median)):
            picked = {name: pick(values) if values else None for name, values in times.items()}
            cells = " ".join(f"{value:>22.2f}" if value is not None else f"{'-':>22}" for value in picked.values())
            fresh, bare = picked["fresh-process suite"], picked["bare 3 runs"]
            ratio = f"{fresh / bare:>9.2f}x" if fresh is not None else f"{'-':>10}"
            print(f"{cls.__name__:<24} {cls.world_size():>5} {cells} {ratio}  {label}")


if __name__ == "__main__":
    main()
