"""Multi-rank conformance classes for the process tests: a rank that crashes, a rank that hangs, replicas declared
wrong, and the module whose fresh processes import them (not collected itself: the classes are reached as
attributes of this module)."""

from __future__ import annotations

import time
import unittest
from typing import Any

import torch

from conformance import PredictionWriterConformance, StopAndGoConformance
from reference_models.mutants.stop_and_go import DDPMutantBaseRecipe
from reference_models.recipes import PerRankDropoutGPT, PredictionRecipe


class GPTCrashingOnRankOne(PerRankDropoutGPT):
    """Rank 1 raises in the second optimizer step; rank 0 would wait for it in the gradient all-reduce."""

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.global_rank == 1 and self.trainer.global_step == 1:
            raise RuntimeError("rank 1 ran out of memory (simulated)")
        return super().training_step(batch, batch_idx)


class GPTHangingOnRankOne(PerRankDropoutGPT):
    """Rank 1 stops making progress in the second optimizer step (a deadlock, a stuck file system)."""

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.global_rank == 1 and self.trainer.global_step == 1:
            time.sleep(3600)
        return super().training_step(batch, batch_idx)


class CrashingRank(DDPMutantBaseRecipe, StopAndGoConformance, unittest.TestCase):
    model_class = GPTCrashingOnRankOne
    num_steps = 4
    stop_step = 2


class HangingRank(DDPMutantBaseRecipe, StopAndGoConformance, unittest.TestCase):
    model_class = GPTHangingOnRankOne
    num_steps = 4
    stop_step = 2
    process_deadline_s = 20.0

    @classmethod
    def make_callbacks(cls) -> list[Any]:
        return DDPMutantBaseRecipe.make_callbacks()


class GPTChangingAWeightOnRankOneAtLoad(PerRankDropoutGPT):
    """Changes a weight on rank 1 while loading the checkpoint: no bug under DDP, which broadcasts rank 0's
    parameters and buffers when it wraps the model, after the checkpoint is loaded."""

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.global_rank == 1:
            name = next(iter(checkpoint["state_dict"]))
            checkpoint["state_dict"][name] = checkpoint["state_dict"][name] + 1.0


class WeightChangedOnRankOneAtLoad(DDPMutantBaseRecipe, StopAndGoConformance, unittest.TestCase):
    model_class = GPTChangingAWeightOnRankOneAtLoad


class DDPReplicasDeclaredAsModelParallel(PredictionRecipe, PredictionWriterConformance, unittest.TestCase):
    """Declares model replicas of 2 ranks, but DDP makes every rank a replica of its own."""

    model_parallel_size = 2

    @classmethod
    def trainer_kwargs(cls) -> dict[str, Any]:
        return {"strategy": "ddp"}
