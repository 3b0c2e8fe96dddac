"""Broken variants of the reference GPT recipe under StopAndGoConformance, each a small, realistic resume bug."""

from __future__ import annotations

import os
import unittest
from collections.abc import Mapping
from typing import Any, ClassVar

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from conformance import StopAndGoConformance
from reference_models.data import SyntheticDataModule
from reference_models.gpt import TinyGPT
from reference_models.mutants import Mutant
from reference_models.recipes import GPTRecipe, StepSeededGPT

__all__ = ["STOP_AND_GO_MUTANTS"]

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
    """Counts consumed samples from the global step since 0, not since the loader was built: double counting."""

    def train_dataloader(self) -> DataLoader:
        loader = super().train_dataloader()
        self._loader_global_step = 0  # the init-global-step bookkeeping a hand-written data module forgets
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


class MutantBaseRecipe(GPTRecipe):
    """The GPT recipe with one micro-batch per step: mutants then fail for their own bug only, on every supported
    Lightning (before 2.5, Lightning resumes a checkpoint saved in ``on_train_batch_end`` one batch early, which
    breaks gradient accumulation; the reference classes show that separately)."""

    datamodule_kwargs: ClassVar[Mapping[str, Any]] = {"global_batch_size": 4}


def _recipe(name: str, **hooks: Any) -> type[unittest.TestCase]:
    """The conformance class ``Mutant_<name>``: MutantBaseRecipe with some hooks or classes replaced."""
    wrapped = {key: classmethod(value) if callable(value) and not isinstance(value, type) else value
               for key, value in hooks.items()}
    recipe = type(f"{name}Recipe", (MutantBaseRecipe,), wrapped)
    return type(f"Mutant_{name}", (recipe, StopAndGoConformance, unittest.TestCase),
                {"__module__": __name__, "__qualname__": f"Mutant_{name}"})


_WEIGHTS_DRIFT = frozenset({"test_optimizer_state", "test_train_outputs", "test_train_loss", "test_valid_outputs",
                            "test_valid_loss", "test_final_weights"})

STOP_AND_GO_MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "rng_not_restored", "no RNG-state callback: dropout after the resume draws different masks",
        _recipe("rng_not_restored", make_callbacks=lambda cls: []),
        kills={"test_rng_state": "first divergence at optimizer step 5, micro-batch 0 (after the resume)",
               "test_train_outputs": "after the resume", "test_train_loss": "after the resume",
               "test_final_weights": "ends with different weights"},
        may_also_fail=_WEIGHTS_DRIFT,
    ),
    Mutant(
        "reseeds_from_uncheckpointed_counter", "reseeds from a batch counter that restarts at 0 after the resume",
        _recipe("reseeds_from_uncheckpointed_counter", model_class=CounterSeededGPT, make_callbacks=lambda cls: []),
        kills={"test_rng_state": "first divergence at optimizer step 5, micro-batch 0 (after the resume)",
               "test_train_loss": "after the resume", "test_final_weights": "ends with different weights"},
        may_also_fail=_WEIGHTS_DRIFT,
    ),
    Mutant(
        "lr_scheduler_not_restored", "the LR scheduler's load_state_dict restores nothing",
        _recipe("lr_scheduler_not_restored", model_class=GPTWithForgetfulScheduler),
        kills={"test_lr_scheduler_state": "first divergence at optimizer step 5",
               "test_learning_rate": "first divergence at optimizer step 6"},
        may_also_fail=_WEIGHTS_DRIFT,
    ),
    Mutant(
        "datamodule_restarts_from_zero", "the data module ignores its saved state and replays from sample 0",
        _recipe("datamodule_restarts_from_zero", datamodule_class=DataModuleIgnoringState),
        kills={"test_initial_consumed_samples": "replays data", "test_train_inputs": "after the resume",
               "test_consumed_samples": "first divergence at optimizer step 5"},
        may_also_fail=_WEIGHTS_DRIFT,
    ),
    Mutant(
        "optimizer_state_lost", "checkpoints drop the AdamW moments",
        _recipe("optimizer_state_lost", model_class=GPTStrippingOptimizerState),
        kills={"test_optimizer_state": "first divergence at optimizer step 5",
               "test_checkpoint_contents": "'optimizer_states' differs"},
        may_also_fail=_WEIGHTS_DRIFT,
    ),
    Mutant(
        "adam_second_moments_lost", "Adam's exp_avg_sq is zeroed on load (values ~1e-5, below float32's atol)",
        _recipe("adam_second_moments_lost", model_class=GPTLosingSecondMoments),
        kills={"test_optimizer_state": "first divergence at optimizer step 5 (after the resume); 4 of 8 compared "
                                       "records of 'optimizer_state' differ; root[0]['state'][0]['exp_avg_sq']"},
        may_also_fail=_WEIGHTS_DRIFT,
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
        may_also_fail=_WEIGHTS_DRIFT | {"test_learning_rate", "test_lr_scheduler_state", "test_consumed_samples",
                                        "test_initial_consumed_samples", "test_rng_state", "test_train_inputs",
                                        "test_valid_inputs", "test_runs_trained"},
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
        _recipe("nondeterministic_recipe", make_model=_unseeded_gpt),
        kills={"test_train_loss": "the recipe is not deterministic under identical seeding"},
        may_also_fail=frozenset(StopAndGoConformance.check_names()) - {"test_train_loss"},
    ),
    Mutant(
        "nothing_trained", "limit_train_batches=0: every run skips training, so there is nothing to compare",
        _recipe("nothing_trained",
                trainer_kwargs=lambda cls: {**MutantBaseRecipe.trainer_kwargs(), "limit_train_batches": 0}),
        kills={"test_runs_trained": "the continuous run recorded no optimizer step"},
        may_also_fail=frozenset(StopAndGoConformance.check_names()),
    ),
)
