"""A CPU implementation of Megatron-core's model-parallel RNG tracker, which is CUDA-only (seeding it asserts CUDA).

:func:`cpu_model_parallel_seed` installs a CPU tracker (:func:`cpu_rng_tracker`), which keeps the same named streams
as CPU generator states and seeds them as ``model_parallel_cuda_manual_seed`` does, so Megatron models train on
CPU with tensor parallelism over gloo. Its states are read and written like Megatron's
(:mod:`conformance.training.megatron_rng`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["cpu_model_parallel_seed", "cpu_rng_tracker"]

#: Megatron's offsets: tensor-parallel streams from seed + 2718 + tp rank, expert streams from seed + 1024.
_TENSOR_PARALLEL_OFFSET = 2718
_EXPERT_PARALLEL_OFFSET = 1024


def _megatron_random() -> Any:
    """``megatron.core.tensor_parallel.random``, imported (raises ImportError without Megatron-core)."""
    import megatron.core.tensor_parallel.random as megatron_random

    return megatron_random


def cpu_rng_tracker() -> Any:
    """A new, empty CPU tracker: Megatron's ``CudaRNGStatesTracker`` with CPU generator states. ``add(name, seed)``
    creates a named stream; ``fork(name)`` draws from it and leaves the default CPU stream where it was."""
    return _cpu_tracker_class()()


def _cpu_tracker_class() -> type:
    """The CPU tracker class, built once on Megatron's (subclassed lazily: importing the kit never imports it)."""
    base = _megatron_random().CudaRNGStatesTracker
    cached = getattr(base, "_conformance_cpu_tracker", None)
    if cached is not None:
        return cached

    class CPURNGStatesTracker(base):
        def add(self, name: str, seed: int) -> None:
            self._is_initialized = True
            if seed in self.seeds_:
                raise ValueError(f"seed {seed} already exists")
            if name in self.states_:
                raise ValueError(f"rng state {name} already exists")
            self.seeds_.add(seed)
            self.states_[name] = torch.Generator().manual_seed(seed).get_state()

        @contextlib.contextmanager
        def fork(self, name: str = "model-parallel-rng") -> Iterator[None]:
            if name not in self.states_:
                raise ValueError(f"rng state {name} is not added")
            outside = torch.get_rng_state()
            torch.set_rng_state(self.states_[name])
            try:
                yield
            finally:
                self.states_[name] = torch.get_rng_state()
                torch.set_rng_state(outside)

    base._conformance_cpu_tracker = CPURNGStatesTracker
    return CPURNGStatesTracker


def cpu_model_parallel_seed(seed: int, *, tp_rank: int | None = None, ep_rank: int = 0, etp_rank: int = 0) -> None:
    """``model_parallel_cuda_manual_seed`` for CPU runs: install a :func:`cpu_rng_tracker` as Megatron's tracker
    and seed its data-parallel, tensor-parallel and expert-parallel streams with Megatron's offsets."""
    megatron_random = _megatron_random()
    if tp_rank is None:
        tp_rank = megatron_random.get_tensor_model_parallel_rank()
    tracker = cpu_rng_tracker()
    torch.manual_seed(seed)
    tracker.add(megatron_random._DATA_PARALLEL_RNG_TRACKER_NAME, seed)
    tracker.add(megatron_random._MODEL_PARALLEL_RNG_TRACKER_NAME, seed + _TENSOR_PARALLEL_OFFSET + tp_rank)
    tracker.add(megatron_random._EXPERT_PARALLEL_RNG_TRACKER_NAME,
                seed + _EXPERT_PARALLEL_OFFSET + 100 * ep_rank + etp_rank)
    megatron_random._CUDA_RNG_STATE_TRACKER = tracker
    megatron_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True
