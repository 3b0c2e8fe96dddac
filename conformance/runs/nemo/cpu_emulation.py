"""CPU emulation of the CUDA calls NeMo 2.7's ``MegatronStrategy`` makes, so that its real code runs on a CPU.

NeMo's strategy, Megatron-core's DDP buffers, optimizer, gradient clipping and checkpoint saving ask for CUDA in
about a dozen places, with no switch to avoid them. :func:`cuda_on_cpu` answers each of those requests with the CPU:

- ``torch.cuda.current_device()`` is device 0 (an int: NeMo builds ``torch.device("cuda", index=...)`` from it);
  ``torch.cuda.Stream`` is an inert stand-in (the strategy wraps its DDP set-up in a side stream);
  ``torch.cuda.synchronize()`` does nothing (checkpoint saving); ``torch.cuda.is_initialized()`` is True (an assert
  in NeMo's checkpoint loading).
- A torch function mode moves every ``device="cuda"`` (or an ordinal) to the CPU, drops ``pin_memory=True``, turns
  ``Tensor.to("cuda")`` and ``Tensor.cuda()`` into no-ops (the latter: Megatron exchanging checkpoint shards between
  data-parallel ranks), and has ``Tensor.type()`` name ``torch.cuda.*`` types (an assert in Megatron's gradient
  clipping).
- NeMo seeds Megatron's model-parallel RNG tracker only when CUDA devices exist; here the kit's CPU tracker is
  seeded in its place, with the same seed and offsets, so dropout inside tensor-parallel regions has its streams.

It certifies NeMo's strategy, checkpoint, sampler and loop logic, not GPU numerics, and every report of a run
under it says so (:data:`LABEL`). It is process-local and undone on exit; the kit enters it only in the rank
processes it launches, never in the process that runs the tests.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from conformance.runs.megatron.cpu_tracker import cpu_model_parallel_seed
from conformance.runs.processes import RANK_PROCESS_ENV

__all__ = ["LABEL", "cuda_on_cpu"]

#: How reports name runs under this emulation.
LABEL = "NeMo strategy on CPU emulation"

_CPU = torch.device("cpu")


def _is_cuda(device: Any) -> bool:
    """Whether ``device`` names a CUDA device: "cuda", "cuda:1", a CUDA ``torch.device`` or a bare ordinal."""
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, int) and not isinstance(device, bool)


class _CudaRequestsOnCpu(TorchFunctionMode):
    """Every torch call that asks for CUDA memory gets CPU memory instead."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            return name.replace("torch.", "torch.cuda.", 1) if not name.startswith("torch.cuda.") else name
        if kwargs.get("pin_memory"):
            kwargs["pin_memory"] = False
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = _CPU
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda(args[1]):
            args = (args[0], _CPU, *args[2:])
        if func is torch.Tensor.cuda:
            return args[0]
        return func(*args, **kwargs)


class _InertStream:
    """Stands in for ``torch.cuda.Stream``: work submitted "to it" runs on the CPU in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


def _seed_like_nemo(seed: int) -> None:
    """NeMo's ``megatron_init._set_random_seed`` as it runs on a GPU, with the CPU tracker in place of CUDA's."""
    from megatron.core import parallel_state

    if seed is None or seed <= 0:
        raise ValueError(f"Seed ({seed}) should be a positive integer.")
    seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    cpu_model_parallel_seed(seed)


_CUDA_STAND_INS = {
    "current_device": lambda: 0,
    "Stream": _InertStream,
    "synchronize": lambda *args, **kwargs: None,
    "is_initialized": lambda: True,
}


@contextlib.contextmanager
def cuda_on_cpu() -> Iterator[None]:
    """Run NeMo's MegatronStrategy on the CPU inside this block (main thread; kit rank processes only)."""
    if not os.environ.get(RANK_PROCESS_ENV):
        raise RuntimeError(f"the {LABEL} runs only in rank processes the kit launches, never in the test process")
    from nemo.lightning import megatron_init

    saved = {name: getattr(torch.cuda, name) for name in _CUDA_STAND_INS}
    saved_seeding = megatron_init._set_random_seed
    try:
        for name, stand_in in _CUDA_STAND_INS.items():
            setattr(torch.cuda, name, stand_in)
        megatron_init._set_random_seed = _seed_like_nemo
        with _CudaRequestsOnCpu():
            yield
    finally:
        for name, original in saved.items():
            setattr(torch.cuda, name, original)
        megatron_init._set_random_seed = saved_seeding
