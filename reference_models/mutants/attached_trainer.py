"""Broken variants of the attached backend's reference trainer under StopAndGoConformance: resume bugs of trainers
that run their own loop, each a subclass of :class:`TinyTrainer` as a trainer's author would write it."""

from __future__ import annotations

import unittest
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

from conformance import StopAndGoConformance, restore_rng_state
from reference_models.attached_trainer import AttachedTrainerRecipe, TinyTrainer
from reference_models.mutants import Mutant, mutant_class
from reference_models.mutants.stop_and_go import UNDECLARED_CHECKS, WEIGHTS_DRIFT

__all__ = ["ATTACHED_MUTANTS", "RNGRestoredBeforeIterTrainer"]


class RNGNotSavedTrainer(TinyTrainer):
    """Saves no RNG state (torchtitan's checkpoints have none: ``TODO(checkpoint-rng)``)."""

    def trainer_state(self) -> dict[str, Any]:
        return {name: value for name, value in super().trainer_state().items() if name != "rng"}


class RNGRestoredBeforeIterTrainer(TinyTrainer):
    """Restores the RNG with the rest of the checkpoint; the loader's new iterator then draws from the restored
    stream (Megatron-Bridge #5257)."""

    def restore(self, folder: Path) -> dict[str, Any] | None:
        rng_state = super().restore(folder)
        if rng_state is not None:
            restore_rng_state(rng_state)
        return None


class LoaderNotSavedTrainer(TinyTrainer):
    """Keeps no train-loader state: the resumed run starts its epoch again at the first batch."""

    def trainer_state(self) -> dict[str, Any]:
        return {name: value for name, value in super().trainer_state().items() if name != "train_loader"}

    def load_trainer_state(self, saved: dict[str, Any]) -> dict[str, Any] | None:
        return super().load_trainer_state({**saved, "train_loader": self.train_loader.state_dict()})  # a fresh one


class ModelOnlyRestoreTrainer(TinyTrainer):
    """Restores the model's weights but starts a fresh optimizer (its moments restart at zero)."""

    def restore_model_and_optimizer(self, folder: Path) -> None:
        state = {"model": get_model_state_dict(self.module)}
        dcp.load(state, checkpoint_id=str(folder))
        set_model_state_dict(self.module, state["model"])


class RankZeroTrainerStateTrainer(TinyTrainer):
    """Rank 0 alone writes the trainer state, and every rank loads it (accelerate #3938): all ranks resume at rank
    0's loader position and random stream."""

    def write_trainer_state(self, folder: Path) -> None:
        if self.rank == 0:
            torch.save(self.trainer_state(), folder / "trainer.pt")

    def read_trainer_state(self, folder: Path) -> dict[str, Any]:
        return torch.load(folder / "trainer.pt", weights_only=True)


def _recipe(name: str, trainer_class: type[TinyTrainer], **settings: Any) -> type[unittest.TestCase]:
    return mutant_class(f"attached_{name}", AttachedTrainerRecipe, StopAndGoConformance, __name__,
                        trainer_class=trainer_class, **{"num_steps": 10, "stop_step": 4, **settings})


_NOT_APPLICABLE = frozenset({"test_consumed_samples", "test_initial_consumed_samples"}) | UNDECLARED_CHECKS

ATTACHED_MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "attached_rng_not_saved", "the checkpoint holds no RNG state: dropout after the resume differs",
        _recipe("rng_not_saved", RNGNotSavedTrainer),
        kills={"test_rng_state": "first divergence at optimizer step 5, micro-batch 0 (after the resume)",
               "test_train_outputs": "after the resume"},
        may_also_fail=WEIGHTS_DRIFT, skips=_NOT_APPLICABLE,
    ),
    Mutant(
        "attached_rng_restored_before_iter", "RNG restored at load time: iter(loader) then draws from the stream",
        _recipe("rng_restored_before_iter", RNGRestoredBeforeIterTrainer),
        kills={"test_rng_state": "first divergence at optimizer step 5, micro-batch 0 (after the resume)",
               "test_train_outputs": "after the resume"},
        may_also_fail=WEIGHTS_DRIFT, skips=_NOT_APPLICABLE,
    ),
    Mutant(
        "attached_loader_not_saved", "no train-loader state in the checkpoint: the epoch restarts at batch 0",
        _recipe("loader_not_saved", LoaderNotSavedTrainer),
        kills={"test_train_inputs": "first divergence at optimizer step 5, micro-batch 0 (after the resume)",
               "test_checkpoint_contents": "rank 0's train-loader state is not in it"},
        may_also_fail=WEIGHTS_DRIFT | {"test_global_step", "test_rng_state"}, skips=_NOT_APPLICABLE,
    ),
    Mutant(
        "attached_model_only_restore", "the resume loads the weights and starts a fresh optimizer",
        _recipe("model_only_restore", ModelOnlyRestoreTrainer),
        kills={"test_optimizer_state": "first divergence at optimizer step 5",
               "test_restored_state": "optimizer 0: `exp_avg` of parameter"},
        # a fresh optimizer's learning rates are its initial ones until the restored scheduler steps once
        may_also_fail=WEIGHTS_DRIFT | {"test_learning_rate"}, skips=_NOT_APPLICABLE,
    ),
    Mutant(
        "attached_trainer_state_of_rank_0", "rank 0 alone saves the loader and RNG state; every rank loads it",
        _recipe("trainer_state_of_rank_0", RankZeroTrainerStateTrainer, num_steps=6, stop_step=3, num_ranks=2),
        # the ranks' loader positions are equal (a DistributedSampler shards by rank, its state is a count), their
        # random streams are not (the trainer seeds each rank with seed + rank)
        kills={"test_rng_state": "at optimizer step 4, micro-batch 0 (after the resume)"},
        may_also_fail=WEIGHTS_DRIFT, skips=_NOT_APPLICABLE,
    ),
)
