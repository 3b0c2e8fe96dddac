"""Megatron-core's model-parallel RNG tracker states in the kit's RNG snapshots, read and written without importing
Megatron-core (the CPU tracker itself is :mod:`conformance.runs.megatron.cpu_tracker`).

Megatron draws tensor-parallel dropout from named RNG streams kept by a tracker
(``megatron.core.tensor_parallel.get_cuda_rng_tracker()``): one per tensor-parallel rank for dropout inside a
tensor-parallel region, one shared by the data-parallel group. Megatron's tracker is CUDA-only (seeding it asserts
CUDA; the kit installs a CPU one on CPU runs). :func:`tracker_states` and :func:`set_tracker_states` read and write whichever
tracker is installed; they never import Megatron-core themselves.
"""

from __future__ import annotations

import sys

import torch

__all__ = ["set_tracker_states", "tracker_states"]

_RANDOM = "megatron.core.tensor_parallel.random"
def tracker_states() -> dict[str, torch.Tensor] | None:
    """A copy of the installed model-parallel tracker's named states; None when Megatron-core is not imported or
    its tracker holds no states."""
    megatron_random = sys.modules.get(_RANDOM)
    tracker = getattr(megatron_random, "_CUDA_RNG_STATE_TRACKER", None)
    if tracker is None or not tracker.is_initialized() or not tracker.get_states():
        return None
    return {name: state.clone() for name, state in tracker.get_states().items()}


def set_tracker_states(states: dict[str, torch.Tensor]) -> None:
    """Give the installed model-parallel tracker ``states`` (as returned by :func:`tracker_states`)."""
    megatron_random = sys.modules.get(_RANDOM)
    tracker = getattr(megatron_random, "_CUDA_RNG_STATE_TRACKER", None)
    if tracker is None:
        raise RuntimeError(
            "the RNG state holds Megatron-core model-parallel tracker states, but no tracker is installed in this "
            "process: seed the model-parallel RNG (model_parallel_cuda_manual_seed, or "
            "conformance.runs.megatron.cpu_tracker.cpu_model_parallel_seed on CPU) before restoring")
    tracker.set_states({name: state.clone() for name, state in states.items()})
