"""The tiny GPT with emulated GPU kernel nondeterminism, for proving the tolerance profiles on a CPU.

On a GPU, atomics and reduction orders that vary between launches make each gradient differ in its last bits from
one run to the next, with nothing a seed can fix. :class:`EmulatedKernelNoise` does the same on a CPU: after every
backward it scales each gradient element by ``1 + 2**-23 * n`` (about one float32 ulp), ``n`` drawn from a
generator seeded by the operating system. The recipe resumes exactly in every other respect.
"""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
import torch

from conformance import RNGStateCallback
from reference_models.recipes import GPTRecipe

__all__ = ["EmulatedKernelNoise", "NoisyGPTRecipe"]


class EmulatedKernelNoise(pl.Callback):
    """Perturbs every gradient after each backward by a relative ``relative * N(0, 1)`` from an OS-seeded generator
    of its own: no two runs compute the same bits, and the global random streams are untouched."""

    def __init__(self, relative: float = 2.0**-23) -> None:
        self.relative = relative
        self._generator = torch.Generator().manual_seed(int.from_bytes(os.urandom(7), "little"))

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with torch.no_grad():
            for parameter in pl_module.parameters():
                if parameter.grad is not None:
                    noise = torch.randn(parameter.grad.shape, generator=self._generator, dtype=parameter.grad.dtype)
                    parameter.grad.mul_(noise.mul_(self.relative).add_(1.0))


class NoisyGPTRecipe(GPTRecipe):
    """The reference GPT recipe with :class:`EmulatedKernelNoise`: certify it under ``tolerance_profile =
    "gpu_fp32"``; under ``"strict"`` it fails."""

    @classmethod
    def make_callbacks(cls) -> list[Any]:
        return [RNGStateCallback(), EmulatedKernelNoise()]
