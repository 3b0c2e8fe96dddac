"""Time conformance.compare.assert_close against torch.testing.assert_close on AdamW-like state_dicts.

Usage: python bench/bench_compare.py [--elements 50000000] [--small-parameters 3334] [--repeats 5]

Two states: a large one (about ``--elements`` floats in a few hundred tensors) and one of many small tensors
(``--small-parameters`` parameters of 64 floats: 3 tensors each with the step, about 10,000 tensors), where the
cost per leaf dominates. Three cases are timed for each in the same run, best of ``--repeats`` with the two tools
interleaved:
  identical   deep copies of the state
  perturbed   every float tensor scaled by (1 + 1e-7), inside the float32 tolerance
  mismatched  several tensors spread over the state carry differences beyond tolerance
In the mismatched case torch.testing raises with the first failing tensor only,
while conformance.compare reports every difference with its path.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conformance.compare import ComparisonError, assert_close


def transformer_shapes(parameters: int, layers: int = 8) -> list[tuple[int, ...]]:
    """Parameter shapes of a small transformer whose size is close to ``parameters``."""
    # 12 d^2 weights per layer plus an 8d x d embedding: about (12 * layers + 8) d^2 parameters.
    width = max(8, round(math.sqrt(parameters / (12 * layers + 8)) / 8) * 8)
    shapes: list[tuple[int, ...]] = [(8 * width, width)]
    for _ in range(layers):
        shapes += [(width,), (width,), (3 * width, width), (3 * width,), (width, width), (width,)]
        shapes += [(width,), (width,), (4 * width, width), (4 * width,), (width, 4 * width), (width,)]
    return [*shapes, (width,), (width,)]


def adamw_state(elements: int, seed: int = 0) -> dict:
    """An AdamW-like optimizer state_dict whose exp_avg and exp_avg_sq hold about ``elements`` floats in total."""
    return adamw_state_of_shapes(transformer_shapes(elements // 2), seed)


def small_tensors_state(parameters: int, seed: int = 0) -> dict:
    """An AdamW-like state_dict of ``parameters`` parameters with 64 floats each (the per-leaf cost dominates)."""
    return adamw_state_of_shapes([(64,)] * parameters, seed)


def adamw_state_of_shapes(shapes: list[tuple[int, ...]], seed: int) -> dict:
    """An AdamW optimizer state_dict for parameters of ``shapes``: random moments, one param group."""
    generator = torch.Generator().manual_seed(seed)
    state = {
        index: {
            "step": torch.tensor(1000.0),
            "exp_avg": torch.randn(shape, generator=generator) * 1e-3,
            "exp_avg_sq": torch.rand(shape, generator=generator) * 1e-4,
        }
        for index, shape in enumerate(shapes)
    }
    group = {
        "lr": 3e-4,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.01,
        "amsgrad": False,
        "maximize": False,
        "foreach": None,
        "capturable": False,
        "differentiable": False,
        "fused": None,
        "params": list(range(len(shapes))),
    }
    return {"state": state, "param_groups": [group]}


def mapped(state: dict, change: Callable[[int, str, torch.Tensor], torch.Tensor]) -> dict:
    """A copy of ``state`` whose exp_avg / exp_avg_sq tensors are replaced by ``change(index, name, tensor)``."""
    return {
        "state": {
            index: {
                name: change(index, name, tensor) if name != "step" else tensor.clone()
                for name, tensor in entry.items()
            }
            for index, entry in state["state"].items()
        },
        "param_groups": [dict(group) for group in state["param_groups"]],
    }


def with_mismatches(state: dict, count: int = 6) -> dict:
    """A copy of ``state`` where ``count`` tensors spread over the state have a block of elements off by 1e-2."""
    indices = len(state["state"])
    broken = {round(indices * (k + 0.5) / count) for k in range(count)}

    def change(index: int, name: str, tensor: torch.Tensor) -> torch.Tensor:
        copy = tensor.clone()
        if index in broken and name == "exp_avg":
            copy.view(-1)[:100] += 1e-2
        return copy

    return mapped(state, change)


def _release_free_memory() -> None:
    """Return freed heap pages to the OS (glibc only) so that RSS growth reflects new allocations."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Samples the process resident set size in a thread and records the peak growth over the starting value."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4096

    def __enter__(self) -> Self:
        _release_free_memory()
        self._start = self._rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self._start)
            time.sleep(self.interval)

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss() - self._start)


def best_times(runs: list[Callable[[], None]], repeats: int) -> list[float]:
    """Best wall time of each run, calling the runs in turn ``repeats`` times."""
    times = [math.inf] * len(runs)
    for _ in range(repeats):
        for position, run in enumerate(runs):
            start = time.perf_counter()
            run()
            times[position] = min(times[position], time.perf_counter() - start)
    return times


def peak_memory(run: Callable[[], None]) -> int:
    """Peak RSS growth during one more call of ``run``, measured apart from the timings."""
    with PeakMemory() as memory:
        run()
    return memory.peak


def torch_testing(actual: dict, expected: dict, expect_failure: bool) -> Callable[[], None]:
    def run() -> None:
        try:
            torch.testing.assert_close(actual, expected)
        except AssertionError:
            if not expect_failure:
                raise
        else:
            if expect_failure:
                raise RuntimeError("torch.testing.assert_close unexpectedly passed")

    return run


def ours(actual: dict, expected: dict, expect_failure: bool, reported: list[int]) -> Callable[[], None]:
    def run() -> None:
        try:
            assert_close(actual, expected)
        except ComparisonError as error:
            if not expect_failure:
                raise
            reported[:] = [error.result.total_differences]
        else:
            if expect_failure:
                raise RuntimeError("conformance.compare.assert_close unexpectedly passed")

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elements", type=int, default=50_000_000, help="float32 elements in the state (default 50M)")
    parser.add_argument("--small-parameters", type=int, default=3334,
                        help="parameters of the many-small-tensors state (default 3334: about 10,000 tensors)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case and tool, best kept (default 5)")
    args = parser.parse_args()
    for expected in (adamw_state(args.elements), small_tensors_state(args.small_parameters)):
        time_cases(expected, args.repeats)
    print("ratio = torch.testing time / ours (>= 1: ours at least as fast)")
    print("MiB = peak RSS growth during one extra untimed run, sampled every 1 ms (approximate)")


def time_cases(expected: dict, repeats: int) -> None:
    """Print the timings of the three cases on ``expected``."""
    tensors = [t for entry in expected["state"].values() for t in entry.values()]
    print(
        f"\nstate: {len(expected['state'])} parameters, {len(tensors)} tensors,"
        f" {sum(t.numel() for t in tensors) / 1e6:.1f}M float32 elements; torch {torch.__version__},"
        f" {torch.get_num_threads()} threads; best of {repeats}"
    )
    cases = [
        ("identical", mapped(expected, lambda index, name, t: t.clone()), False),
        ("perturbed", mapped(expected, lambda index, name, t: t * (1 + 1e-7)), False),
        ("mismatched", with_mismatches(expected), True),
    ]
    header = f"{'case':<11} {'torch.testing s':>15} {'ours s':>8} {'ratio':>6} {'torch MiB':>9} {'ours MiB':>8}  notes"
    print(header)
    print("-" * len(header))
    for name, actual, failing in cases:
        reported: list[int] = []
        runs = [torch_testing(actual, expected, failing), ours(actual, expected, failing, reported)]
        reference, candidate = best_times(runs, repeats)
        reference_memory, candidate_memory = (peak_memory(run) for run in runs)
        note = f"ours reports all {reported[0]} differences; torch.testing reports the first only" if failing else ""
        print(
            f"{name:<11} {reference:>15.3f} {candidate:>8.3f} {reference / candidate:>6.2f}"
            f" {reference_memory / 2**20:>9.0f} {candidate_memory / 2**20:>8.0f}  {note}"
        )


if __name__ == "__main__":
    main()
