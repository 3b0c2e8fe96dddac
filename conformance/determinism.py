"""Deterministic mode: the switches that make PyTorch, cuDNN, cuBLAS, NCCL and Transformer Engine compute the same
bits on every run, so that a GPU resume can be certified under the ``strict`` tolerance profile.

The environment variables must be set before the process's first cuBLAS, NCCL or Transformer Engine call: a
stop-and-go class with ``deterministic_mode = True`` switches them on in each run before the recipe builds anything,
and the report says whether every run trained with them on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from conformance._environment import environment_restored

__all__ = ["DETERMINISTIC_ENVIRONMENT", "determinism_settings", "deterministic_mode", "enable_deterministic_mode"]

#: Environment variables of deterministic mode and the values it sets where they are unset (the values Megatron's
#: own deterministic mode documents as validated).
DETERMINISTIC_ENVIRONMENT: dict[str, str] = {
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",  # cuBLAS: a fixed workspace, hence a fixed reduction split
    "NCCL_ALGO": "Ring",  # Ring's reduction order is fixed by the topology
    "NVTE_ALLOW_NONDETERMINISTIC_ALGO": "0",  # Transformer Engine: deterministic kernels only
}


def enable_deterministic_mode() -> None:
    """Switch on deterministic algorithms in torch (raising on an op without one), deterministic cuDNN without
    autotuning, no TF32, and the environment of :data:`DETERMINISTIC_ENVIRONMENT` where it is unset."""
    for name, value in DETERMINISTIC_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def determinism_settings() -> dict[str, Any]:
    """What this process has switched on, as a run records it: ``deterministic`` is True when every switch of
    deterministic mode is on."""
    settings: dict[str, Any] = {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "tf32": bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32),
        **{name: os.environ.get(name) for name in DETERMINISTIC_ENVIRONMENT},
    }
    settings["deterministic"] = (settings["deterministic_algorithms"] and settings["cudnn_deterministic"]
                                 and not settings["cudnn_benchmark"] and not settings["tf32"]
                                 and all(settings[name] is not None for name in DETERMINISTIC_ENVIRONMENT))
    return settings


@contextlib.contextmanager
def deterministic_mode(enabled: bool = True) -> Iterator[None]:
    """Deterministic mode inside the block when ``enabled`` (see :func:`enable_deterministic_mode`); every switch
    and variable is set back as it was after it, so an in-process run leaves its caller's process unchanged."""
    if not enabled:
        yield
        return
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    with environment_restored(DETERMINISTIC_ENVIRONMENT):
        enable_deterministic_mode()
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
            (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32) = flags[2:]
