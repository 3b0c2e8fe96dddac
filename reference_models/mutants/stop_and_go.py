"""Broken variants of the reference GPT recipe under StopAndGoConformance, each a small, realistic resume bug."""

from __future__ import annotations

import dataclasses
import os
import unittest
from collections.abc import Mapping
from typing import Any, ClassVar

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, Subset
from typing_extensions import override

from conformance import RNGStateCallback, StopAndGoConformance
from conformance.training.data import resolve_data_parallel
from conformance.training.rng import capture_rng_state
from reference_models.certify import LIGHTNING_RESUMES_ONE_BATCH_EARLY
from reference_models.data import SyntheticDataModule
from reference_models.ema import CheckpointedEMA, WarmupEMA
from reference_models.gpt import TinyGPT
from reference_models.mutants import Mutant, mutant_class
from reference_models.mutants.datamodule import UntranslatedElasticDataModule
from reference_models.recipes import DDPGPTRecipe, ElasticGPTRecipe, GPTRecipe, PerRankDropoutGPT, StepSeededGPT

__all__ = ["STOP_AND_GO_MUTANTS", "UNDECLARED_CHECKS", "WEIGHTS_DRIFT"]

# --- broken building blocks -----------------------------------------------------------------------------------


class ForgetfulLambdaLR(torch.optim.lr_scheduler.LambdaLR):
    """A custom scheduler whose ``load_state_dict`` restores nothing: the schedule restarts at warmup."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


class GPTWithForgetfulScheduler(TinyGPT):
    """Its LR scheduler ignores the checkpoint."""

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        scheduler = ForgetfulLambdaLR(optimizer, self.schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class GPTStrippingOptimizerState(TinyGPT):
    """Drops the AdamW moments from checkpoints "to keep them small": the resumed optimizer starts cold."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for optimizer_state in checkpoint["optimizer_states"]:
            optimizer_state["state"] = {}


class GPTLosingSecondMoments(TinyGPT):
    """Resets Adam's second moments when loading a checkpoint (e.g. a converter that drops "unused" buffers)."""

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for optimizer_state in checkpoint["optimizer_states"]:
            for parameter_state in optimizer_state["state"].values():
                parameter_state["exp_avg_sq"] = torch.zeros_like(parameter_state["exp_avg_sq"])


class GPTStrippingLoopState(TinyGPT):
    """Exports "portable" checkpoints without the trainer's loop state: the resumed run restarts at step 0."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint.pop("loops")


class DataModuleIgnoringState(SyntheticDataModule):
    """``load_state_dict`` is a no-op: the resumed run starts again from sample 0."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


class DataModuleWithoutInitGlobalStep(SyntheticDataModule):
    """Counts consumed samples from the micro-batches since 0, not since the loader was built: double counting."""

    def train_dataloader(self) -> DataLoader:
        loader = super().train_dataloader()
        self._loader_batches_trained = 0  # the since-the-loader-was-built bookkeeping a hand-written data module forgets
        return loader


class DataModuleShiftingValidation(SyntheticDataModule):
    """Validation starts at the training offset (consumed samples), so it moves after a resume."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**kwargs, "num_val": 12})

    def val_dataloader(self) -> DataLoader:
        offset = self.consumed_samples % len(self.val_set)
        order = [(offset + index) % len(self.val_set) for index in range(len(self.val_set))]
        return DataLoader(Subset(self.val_set, order), batch_size=self.micro_batch_size)


def _unseeded_gpt(cls: type) -> TinyGPT:
    """Builds the model after reseeding from the OS, as code that seeds with the wall clock does."""
    torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
    return TinyGPT()


class CounterSeededGPT(StepSeededGPT):
    """Reseeds from a count of the batches it has seen, which no checkpoint holds: it restarts at 0 on resume."""

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.batches_seen = getattr(self, "batches_seen", 0) + 1
        torch.manual_seed(self.seed * 1_000_003 + self.batches_seen)


def _restored_one_batch_early() -> str | None:
    """Lightning < 2.5 restores the position one micro-batch early, which here happens to realign the window."""
    if LIGHTNING_RESUMES_ONE_BATCH_EARLY:
        return ("Lightning < 2.5 restores an on_train_batch_end checkpoint one micro-batch early; after 3 steps of one "
                "micro-batch per rank that lands the untranslated count on an accumulation boundary of 1 rank")
    return None


def _numpy_loads_weights_only() -> str | None:
    """Importing NeMo or Megatron-core adds numpy arrays to torch's weights-only allowlist for the whole process."""
    if np.ndarray in torch.serialization.get_safe_globals():
        return ("this process allowlists numpy arrays for torch.load(weights_only=True) (importing NeMo or "
                "Megatron-core does), so such a checkpoint loads here")
    return None


class NumpyRNGCallback(pl.Callback):
    """Saves numpy's RNG state as an ndarray: the checkpoint no longer loads with weights_only=True."""

    def state_dict(self) -> dict[str, Any]:
        return {"numpy": np.random.get_state()[1]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


# --- broken on several ranks ----------------------------------------------------------------------------------


class DataModuleRestoringSavedRank(SyntheticDataModule):
    """Keeps its data-parallel rank in its state "to resume exactly where it was"; rank 0 writes the checkpoint, so
    every rank resumes on rank 0's slice of the global batches."""

    def state_dict(self) -> dict[str, int]:
        return {**super().state_dict(), "data_parallel_rank": resolve_data_parallel(self.trainer)[0]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.restored_rank = state_dict["data_parallel_rank"]

    def train_dataloader(self) -> DataLoader:
        loader = super().train_dataloader()
        if hasattr(self, "restored_rank"):
            loader.batch_sampler.data_parallel_rank = self.restored_rank
        return loader


class SingleProcessRNGCallback(RNGStateCallback):
    """RNG checkpointing as written for one process: each rank returns its own stream without gathering the others,
    but only rank 0's reaches the checkpoint, so every rank resumes with rank 0's random stream."""

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._carried if self._carried is not None else capture_rng_state()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._carried = state_dict["rng"]


class StepSeededGPTRestoringRank(StepSeededGPT):
    """Reseeds from (step, micro-batch, rank) but keeps the rank in the checkpoint, written by rank 0: after the
    resume every rank draws rank 0's dropout masks."""

    def on_fit_start(self) -> None:
        self.stream_rank = getattr(self, "stream_rank", self.global_rank)

    def seed_rank(self) -> int:
        return self.stream_rank

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["stream_rank"] = self.stream_rank

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.stream_rank = checkpoint["stream_rank"]


class GPTRestoringTemperatureOnRankZero(PerRankDropoutGPT):
    """Anneals a logit temperature each step, kept as a plain attribute (DDP broadcasts only parameters and
    buffers) and restored by a ``rank_zero_only`` hook: rank 1 resumes at the initial temperature."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.temperature = 1.0

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return super().forward(tokens) / self.temperature

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.temperature *= 1.05

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["temperature"] = self.temperature

    @rank_zero_only
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.temperature = checkpoint["temperature"]


#: Kept outside the model and the checkpoint: survives a resume in the same process, not a real restart.
_CURRICULUM = {"batches_seen": 0}


class GPTWithModuleLevelCurriculum(TinyGPT):
    """Grows the training sequence length with a batch count kept in a module-level dict: a resume in the process
    that was interrupted carries the count over; a real restart begins the curriculum again."""

    def on_train_start(self) -> None:
        if self.trainer.global_step == 0:
            _CURRICULUM["batches_seen"] = 0

    def loss(self, batch: dict[str, torch.Tensor], *, training: bool) -> torch.Tensor:
        if training:
            _CURRICULUM["batches_seen"] += 1
            length = min(batch["tokens"].shape[1], 4 + _CURRICULUM["batches_seen"])
            batch = {**batch, "tokens": batch["tokens"][:, :length]}
        return super().loss(batch, training=training)


class WarmupEMAForgettingItsCount(WarmupEMA):
    """Checkpoints its shadow weights but not its update count: after a resume the decay warms up again."""

    def state_dict(self) -> dict[str, Any]:
        return CheckpointedEMA.state_dict(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        CheckpointedEMA.load_state_dict(self, state_dict)


class MutantBaseRecipe(GPTRecipe):
    """The GPT recipe with one micro-batch per step: mutants then fail for their own bug only, on every supported
    Lightning (before 2.5, Lightning resumes a checkpoint saved in ``on_train_batch_end`` one batch early, which
    breaks gradient accumulation; the reference classes show that separately)."""

    datamodule_kwargs: ClassVar[Mapping[str, Any]] = {"global_batch_size": 4}


class DDPMutantBaseRecipe(DDPGPTRecipe):
    """The 2-rank DDP recipe with one micro-batch per rank and step (for the same reason as MutantBaseRecipe)."""

    datamodule_kwargs: ClassVar[Mapping[str, Any]] = {"global_batch_size": 8}


def _recipe(name: str, base: type = MutantBaseRecipe, **hooks: Any) -> type[unittest.TestCase]:
    """The conformance class ``Mutant_<name>``: ``base`` with some hooks, classes or settings replaced."""
    return mutant_class(name, base, StopAndGoConformance, __name__, **hooks)


#: What drifts after a resume once the weights differ: the consequences a randomness bug may also fail.
WEIGHTS_DRIFT = frozenset({"test_optimizer_state", "test_train_outputs", "test_train_loss", "test_valid_outputs",
                            "test_valid_loss", "test_final_weights"})

#: The checks that report "not applicable" (saying why) for a recipe that declares no elastic resume and whose
#: callbacks hold no tensors, as most mutants' recipes.
UNDECLARED_CHECKS = frozenset({"test_elastic_resume", "test_callback_state"})

_MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "rng_not_restored", "no RNG-state callback: dropout after the resume draws different masks",
        _recipe("rng_not_restored", make_callbacks=lambda cls: []),
        kills={"test_rng_state": "first divergence at optimizer step 5, micro-batch 0 (after the resume)",
               "test_train_outputs": "after the resume", "test_train_loss": "after the resume",
               "test_final_weights": "ends with different weights"},
        may_also_fail=WEIGHTS_DRIFT,
    ),
    Mutant(
        "reseeds_from_uncheckpointed_counter", "reseeds from a batch counter that restarts at 0 after the resume",
        _recipe("reseeds_from_uncheckpointed_counter", model_class=CounterSeededGPT, make_callbacks=lambda cls: []),
        kills={"test_rng_state": "first divergence at optimizer step 5, micro-batch 0 (after the resume)",
               "test_train_loss": "after the resume", "test_final_weights": "ends with different weights"},
        may_also_fail=WEIGHTS_DRIFT,
    ),
    Mutant(
        "lr_scheduler_not_restored", "the LR scheduler's load_state_dict restores nothing",
        _recipe("lr_scheduler_not_restored", model_class=GPTWithForgetfulScheduler),
        kills={"test_restored_state": "LR scheduler 0: ",
               "test_lr_scheduler_state": "first divergence at optimizer step 5",
               "test_learning_rate": "first divergence at optimizer step 6"},
        may_also_fail=WEIGHTS_DRIFT,
    ),
    Mutant(
        "datamodule_restarts_from_zero", "the data module ignores its saved state and replays from sample 0",
        _recipe("datamodule_restarts_from_zero", datamodule_class=DataModuleIgnoringState),
        kills={"test_initial_consumed_samples": "replays data", "test_train_inputs": "after the resume",
               "test_consumed_samples": "first divergence at optimizer step 5"},
        may_also_fail=WEIGHTS_DRIFT,
    ),
    Mutant(
        "optimizer_state_lost", "checkpoints drop the AdamW moments",
        _recipe("optimizer_state_lost", model_class=GPTStrippingOptimizerState),
        kills={"test_restored_state": "optimizer 0: `exp_avg` of parameter `",
               "test_optimizer_state": "first divergence at optimizer step 5",
               "test_checkpoint_contents": "'optimizer_states' differs"},
        may_also_fail=WEIGHTS_DRIFT,
    ),
    Mutant(
        "adam_second_moments_lost", "Adam's exp_avg_sq is zeroed on load (values ~1e-5, below float32's atol)",
        _recipe("adam_second_moments_lost", model_class=GPTLosingSecondMoments),
        kills={"test_restored_state": "optimizer 0: `exp_avg_sq` of parameter `",
               "test_optimizer_state": "first divergence at optimizer step 5 (after the resume); 4 of 4 compared "
                                       "records of 'optimizer_state' differ; root[0]['state'][0]['exp_avg_sq']"},
        may_also_fail=WEIGHTS_DRIFT,
    ),
    Mutant(
        "init_global_step_forgotten", "consumed samples counted from global step 0 after a resume",
        _recipe("init_global_step_forgotten", datamodule_class=DataModuleWithoutInitGlobalStep),
        kills={"test_consumed_samples": "first divergence at optimizer step 5",
               "test_initial_consumed_samples": "skips data"},
    ),
    Mutant(
        "validation_shifts_after_resume", "validation starts at the training offset",
        _recipe("validation_shifts_after_resume", datamodule_class=DataModuleShiftingValidation),
        kills={"test_valid_inputs": "after the resume", "test_valid_outputs": "after the resume",
               "test_valid_loss": "after the resume"},
    ),
    Mutant(
        "loop_state_dropped", "checkpoints without loop state: the resumed run restarts at global step 0",
        _recipe("loop_state_dropped", model_class=GPTStrippingLoopState),
        kills={"test_global_step": "the resumed run recorded [optimizer step 1;", "test_checkpoint_contents": "'loops' is missing"},
        may_also_fail=WEIGHTS_DRIFT | {"test_learning_rate", "test_lr_scheduler_state", "test_consumed_samples",
                                        "test_initial_consumed_samples", "test_rng_state", "test_train_inputs",
                                        "test_valid_inputs", "test_runs_trained", "test_restored_state"},
    ),
    Mutant(
        "numpy_rng_in_checkpoint", "a callback stores numpy's RNG state as an ndarray",
        _recipe("numpy_rng_in_checkpoint", make_callbacks=lambda cls: [*GPTRecipe.make_callbacks(), NumpyRNGCallback()]),
        kills={"test_checkpoint_contents": "cannot be loaded with torch.load(weights_only=True)"},
        harmless_here=_numpy_loads_weights_only,
        # Lightning >= 2.6 itself loads checkpoints with weights_only=True, so there the resumed run fails too.
        may_also_fail=frozenset(StopAndGoConformance.check_names()) - {"test_checkpoint_contents"},
    ),
    Mutant(
        "nondeterministic_recipe", "the model is initialised from an OS-seeded RNG: no two runs agree",
        # only the three-run mode kills it: resumed from its own reference's checkpoint, the recipe resumes exactly
        _recipe("nondeterministic_recipe", make_model=_unseeded_gpt, interruption="crash"),
        kills={"test_train_loss": "the recipe is not deterministic under identical seeding"},
        may_also_fail=frozenset(StopAndGoConformance.check_names()) - {"test_train_loss"},
    ),
    Mutant(
        "rank_resumes_on_rank0_data", "2 ranks: the data module restores rank 0's data-parallel rank on every rank",
        _recipe("rank_resumes_on_rank0_data", DDPMutantBaseRecipe, datamodule_class=DataModuleRestoringSavedRank),
        kills={"test_train_inputs": "first divergence on rank 1 at optimizer step 5, micro-batch 0 (after the resume)"},
        may_also_fail=WEIGHTS_DRIFT,
    ),
    Mutant(
        "rng_saved_for_rank0_only", "2 ranks: an RNG callback written for one process checkpoints rank 0's stream only",
        _recipe("rng_saved_for_rank0_only", DDPMutantBaseRecipe, make_callbacks=lambda cls: [SingleProcessRNGCallback()]),
        kills={"test_rng_state": "first divergence on rank 1 at optimizer step 5, micro-batch 0 (after the resume)"},
        may_also_fail=WEIGHTS_DRIFT,
    ),
    Mutant(
        "ranks_share_dropout_after_resume", "2 ranks reseeding per step: the rank term is restored from rank 0",
        _recipe("ranks_share_dropout_after_resume", DDPMutantBaseRecipe, model_class=StepSeededGPTRestoringRank,
                make_callbacks=lambda cls: []),
        kills={"test_rng_state": "first divergence on rank 1 at optimizer step 5, micro-batch 0 (after the resume)"},
        may_also_fail=WEIGHTS_DRIFT,
    ),
    Mutant(
        "unbroadcast_state_restored_on_rank0", "2 ranks: a plain attribute DDP does not broadcast is restored by a "
        "rank_zero_only hook",
        _recipe("unbroadcast_state_restored_on_rank0", DDPMutantBaseRecipe,
                model_class=GPTRestoringTemperatureOnRankZero),
        kills={"test_train_outputs": "first divergence on rank 1 at optimizer step 5, micro-batch 0 (after the "
                                     "resume)"},
        may_also_fail=WEIGHTS_DRIFT,
    ),
    Mutant(
        "elastic_position_not_translated", "2 ranks resumed on 1: the data module keeps Lightning's per-rank count of "
        "micro-batches as saved, so gradient accumulation windows straddle global batches",
        _recipe("elastic_position_not_translated", ElasticGPTRecipe, datamodule_class=UntranslatedElasticDataModule,
                num_steps=6, stop_step=3, elastic_resume_world_sizes=(1,)),
        kills={"test_elastic_resume": "2 -> 1 ranks: optimizer step 4 trained on samples"},
        harmless_here=_restored_one_batch_early,
    ),
    Mutant(
        "module_level_state", "a curriculum counter in a module-level dict: only a resume in the interrupted "
        "process carries it over (killed by the fresh-process resume)",
        _recipe("module_level_state", model_class=GPTWithModuleLevelCurriculum),
        kills={"test_train_outputs": "first divergence at optimizer step 5, micro-batch 0 (after the resume)"},
        # shorter sequences draw fewer dropout masks, so the random stream moves on differently
        may_also_fail=WEIGHTS_DRIFT | {"test_rng_state"},
    ),
    Mutant(
        "ema_count_not_checkpointed", "an EMA callback checkpoints its shadow weights but not the update count its "
        "decay warms up with: restored bit-exact, it averages with other weights after the resume",
        _recipe("ema_count_not_checkpointed",
                make_callbacks=lambda cls: [*GPTRecipe.make_callbacks(), WarmupEMAForgettingItsCount()]),
        kills={"test_callback_state": "first divergence at optimizer step 5 (after the resume)"},
    ),
    Mutant(
        "nothing_trained", "limit_train_batches=0: every run skips training, so there is nothing to compare",
        _recipe("nothing_trained",
                trainer_kwargs=lambda cls: {**MutantBaseRecipe.trainer_kwargs(), "limit_train_batches": 0}),
        kills={"test_runs_trained": "the reference run recorded no optimizer step"},
        may_also_fail=frozenset(StopAndGoConformance.check_names()),
    ),
)

#: Every mutant; test_elastic_resume skips (saying why) where the broken recipe declares no elastic resume, and
#: test_callback_state where no callback of the recipe holds tensors.
STOP_AND_GO_MUTANTS: tuple[Mutant, ...] = tuple(
    dataclasses.replace(mutant, skips=mutant.skips | UNDECLARED_CHECKS - (
        {"test_elastic_resume"} if mutant.conformance_class.elastic_resume_world_sizes else set()))
    for mutant in _MUTANTS
)
