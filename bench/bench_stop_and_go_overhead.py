"""Benchmark: a whole StopAndGoConformance class (runs + recording + every check) vs the same three runs bare.

The bare runs are the continuous, interrupted (with its checkpoint) and resumed trainings without recorders or
checks; the ratio is the cost of certifying. Bare and whole runs alternate ``--repeats`` times in one process, so
both see the same machine; minimum and median are reported.

    python bench/bench_stop_and_go_overhead.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conformance import StopAndGoConformance
from conformance.report import run_classes
from conformance.runs.callbacks import Interruption
from conformance.runs.fit import fit_run
from reference_models.certify import TestTinyBERTStopAndGo, TestTinyGPTStopAndGo
from reference_models.data import SyntheticDataModule
from reference_models.gpt import TinyGPT
from reference_models.recipes import GPTRecipe
from reference_models.transformer import TransformerConfig


class WiderGPTStopAndGo(GPTRecipe, StopAndGoConformance, unittest.TestCase):
    """The GPT recipe at width 256, 4 layers, 64 tokens (~3.3M parameters): steps of tens of milliseconds."""

    @classmethod
    def make_model(cls) -> TinyGPT:
        return TinyGPT(TransformerConfig(vocab_size=256, seq_len=64, width=256, heads=4, layers=4))

    @classmethod
    def make_datamodule(cls) -> SyntheticDataModule:
        return SyntheticDataModule(seq_len=64, vocab_size=256)


def bare_runs(cls: type) -> float:
    """Seconds for the suite's three trainings without recorders."""
    work = Path(tempfile.mkdtemp(prefix="bench-bare-"))
    try:
        started = time.perf_counter()
        checkpoint = work / "interrupted.ckpt"
        common = {"work_dir": work, "max_steps": cls.num_steps, "seed": cls.seed, "record": False}
        fit_run(cls, "continuous", **common)
        fit_run(cls, "interrupted", interruption=Interruption(cls.stop_step, cls.interruption, checkpoint), **common)
        outcome = fit_run(cls, "resumed", resume_from=checkpoint, **common)
        elapsed = time.perf_counter() - started
        if outcome.error:
            raise RuntimeError(outcome.error)
        return elapsed
    finally:
        shutil.rmtree(work, ignore_errors=True)


def whole_suite(cls: type[unittest.TestCase]) -> float:
    """Seconds for set-up (three recorded runs) plus every check of the class."""
    started = time.perf_counter()
    report = run_classes([cls])
    elapsed = time.perf_counter() - started
    if not report.ok:
        raise RuntimeError(report.format_text())
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    bare_runs(TestTinyGPTStopAndGo)  # warm-up: imports, first-call allocations
    print(f"{'class':<24} {'bare 3 runs [s]':>16} {'whole suite [s]':>16} {'ratio':>6}  "
          f"(min and median of {args.repeats}, bare and whole interleaved)")
    for cls in (TestTinyGPTStopAndGo, TestTinyBERTStopAndGo, WiderGPTStopAndGo):
        bare, whole = [], []
        for _ in range(args.repeats):
            bare.append(bare_runs(cls))
            whole.append(whole_suite(cls))
        for label, pick in (("min", min), ("median", statistics.median)):
            print(f"{cls.__name__:<24} {pick(bare):>16.2f} {pick(whole):>16.2f} {pick(whole) / pick(bare):>5.2f}x"
                  f"  {label}")


if __name__ == "__main__":
    main()
