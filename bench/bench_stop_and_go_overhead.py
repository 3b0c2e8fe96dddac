"""Benchmark: what certifying a recipe costs over training it, in this process and in fresh rank processes.

Per class: *bare* is the same trainings as the suite's (the reference run writing its checkpoint and training on, an
interrupted run where the class sets ``interruption``, the resumed run; the same validation schedule) without
recorders or checks, in this process (one rank) or in rank processes (two); *in-process suite* is the whole class
(recorded runs and every check) with ``resume_in_fresh_process = False``; *fresh-process suite* is the class as
adopters run it, every run in new processes forked from the kit's fork server (the resumed one included); *three-run
suite* is the in-process class with ``interruption = "crash"``, the oracle before the shared trajectory (a separately
started continuous run, an interrupted run and the resumed run). Each repeat runs the columns of a class back to back, in rotating order, each after a
full garbage collection (a collection of the oldest generation costs ~0.17 s in this process and would otherwise
land in whichever column happened to trigger it); the ratio suite / bare is taken per repeat. Reported: median of
the times, and of the ratios with their quartiles and range. torch runs on ``--threads`` threads.

    python bench/bench_stop_and_go_overhead.py [--repeats 5] [--threads 2] [--only WiderGPTStopAndGo]
    python bench/bench_stop_and_go_overhead.py --recording --repeats 7   # what recording costs, with and without
                                                                          # shared records and reserved blocks
"""

from __future__ import annotations

import argparse
import functools
import gc
import shutil
import statistics
import sys
import tempfile
import time
import unittest
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from conformance import StopAndGoConformance, _append
from conformance.report import run_classes
from conformance.runs.backend import FitPlan
from conformance.runs.lightning.fit import run_fits
from conformance.training.checkpoints import saved_checkpoint
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


def bare_runs(cls: type, *, record: bool = False, share: bool = False) -> float:
    """Seconds for the class's trainings as its ``prepare`` runs them, without recorders (``record``: with them;
    ``share``: records the reference run holds byte for byte stored as references, as the suite does)."""
    work = Path(tempfile.mkdtemp(prefix="bench-bare-"))
    try:
        checkpoints = {name: work / f"{name}.ckpt" for name in ("reference", "interrupted")}
        plan = functools.partial(FitPlan, work_dir=str(work), max_steps=cls.num_steps, seed=cls.seed, record=record,
                                 trainer_defaults=cls.validation_schedule())
        shared = "reference" if share else None
        run = functools.partial(run_fits, cls, in_process=cls.world_size() == 1, deadline_s=600)
        started = time.perf_counter()
        plans = [plan("reference", stop_step=cls.stop_step, checkpoint=str(checkpoints["reference"]))]
        if cls.interruption is not None:
            plans.append(plan("interrupted", stop_step=cls.stop_step, interruption=cls.interruption,
                              checkpoint=str(checkpoints["interrupted"]), shares_records_with=shared))
        run(plans)
        restored = checkpoints["reference" if cls.interruption is None else "interrupted"]
        [resumed] = run([plan("resumed", resume_from=str(saved_checkpoint(restored)), shares_records_with=shared)])
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


def in_process(cls: type, **settings: object) -> type | None:
    """``cls`` with its runs in this process (and ``settings``), or None when it has several ranks (those always
    run in processes)."""
    if cls.world_size() > 1:
        return None
    return type(cls.__name__, (cls,), {"resume_in_fresh_process": False, **settings})


def timed(measure: Callable[[], float]) -> float:
    gc.collect()
    return measure()


def recording_cost(repeats: int) -> None:
    """The 3.3M-parameter class's trainings: bare, recorded as before shared records and reserved blocks,
    and recorded as the suite records now; the columns interleaved, the cost over bare taken per repeat."""
    available = _append._FALLOCATE  # switched off to measure recording without reserved blocks
    columns = {"bare": (False, False, True), "recorded, no shared records, no reserved blocks": (True, False, False),
               "recorded (as the suite does)": (True, True, True)}
    times: dict[str, list[float]] = {name: [] for name in columns}
    for repeat in range(repeats):
        names = list(columns)[repeat % 3:] + list(columns)[:repeat % 3]
        for name in names:
            record, share, reserve = columns[name]
            _append._FALLOCATE = available if reserve else None
            times[name].append(timed(functools.partial(bare_runs, WiderGPTStopAndGo, record=record, share=share)))
    _append._FALLOCATE = available
    print(f"{WiderGPTStopAndGo.__name__}'s trainings, {repeats} repeats, torch threads {torch.get_num_threads()}")
    for name, values in times.items():
        extra = statistics.median(value - bare for value, bare in zip(values, times["bare"]))
        print(f"  {name}: median {statistics.median(values):.3f} s, over bare (per repeat, median) {extra:+.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--recording", action="store_true", help="only what recording costs the 3.3M-parameter class")
    parser.add_argument("--only", help="measure only the class of this name")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.recording:
        recording_cost(args.repeats)
        return
    bare_runs(TestTinyGPTStopAndGo)  # warm-up: imports, first-call allocations
    columns: dict[str, Callable[[type], Callable[[], float] | None]] = {
        "bare": lambda cls: lambda: bare_runs(cls),
        "in-process suite": lambda cls: (lambda: whole_suite(target)) if (target := in_process(cls)) else None,
        "fresh-process suite": lambda cls: (lambda: whole_suite(cls)) if cls.resume_in_fresh_process else None,
        "three-run suite": lambda cls: ((lambda: whole_suite(target)) if cls.interruption is None
                                        and (target := in_process(cls, interruption="crash")) else None),
    }
    print(f"{args.repeats} repeats, torch threads {torch.get_num_threads()}; times: median [s]; ratio to bare: median "
          "[quartiles] (min-max)\n")
    print("| class | ranks | bare runs | in-process suite | fresh-process suite | three-run suite |")
    print("|---|---:|---:|---|---|---|")
    gains: list[tuple[str, list[float]]] = []
    classes = (TestTinyGPTStopAndGo, TestTinyBERTStopAndGo, TestTinyGPTDDPStopAndGo, WiderGPTStopAndGo)
    for cls in (cls for cls in classes if args.only in (None, cls.__name__)):
        measures = {name: make(cls) for name, make in columns.items()}
        times: dict[str, list[float]] = {name: [] for name, measure in measures.items() if measure is not None}
        names = list(times)
        for repeat in range(args.repeats):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(timed(measures[name]))  # type: ignore[arg-type]
        cells = [f"{statistics.median(times['bare']):.2f} s"]
        for name in list(columns)[1:]:
            if name not in times:
                cells.append("-")
                continue
            ratios = sorted(suite / bare for suite, bare in zip(times[name], times["bare"]))
            low, middle, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
            cells.append(f"{statistics.median(times[name]):.2f} s: {middle:.2f}x [{low:.2f}-{high:.2f}] "
                         f"({ratios[0]:.2f}-{ratios[-1]:.2f})")
        print(f"| {cls.__name__} | {cls.world_size()} | " + " | ".join(cells) + " |", flush=True)
        if "three-run suite" in times and "in-process suite" in times:
            gains.append((cls.__name__, sorted(ours / before for ours, before in
                                               zip(times["in-process suite"], times["three-run suite"]))))
    for name, ratios in gains:
        low, middle, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        print(f"{name}: in-process suite / three-run suite {middle:.2f}x [{low:.2f}-{high:.2f}] "
              f"({ratios[0]:.2f}-{ratios[-1]:.2f})")


if __name__ == "__main__":
    main()
