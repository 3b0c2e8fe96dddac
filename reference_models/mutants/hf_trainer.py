"""Broken variants of the Hugging Face Trainer reference recipe under StopAndGoConformance: resume bugs made with the
Trainer's own switches, callbacks and subclassing, as Trainer users make them."""

from __future__ import annotations

import dataclasses
import unittest
from typing import Any

from transformers import Trainer, TrainerCallback

from conformance import StopAndGoConformance
from reference_models.hf_trainer import GPT2TrainerRecipe, make_trainer
from reference_models.mutants import Mutant, mutant_class
from reference_models.mutants.stop_and_go import UNDECLARED_CHECKS, WEIGHTS_DRIFT

__all__ = ["HF_TRAINER_MUTANTS"]


class WarmupScaling(TrainerCallback):
    """Scales every learning rate by its own warmup factor over its own step counter, which it keeps in memory only
    (it is no ``ExportableState``, so the checkpoint does not have it): after a resume the warmup starts again."""

    def __init__(self, steps: int = 8) -> None:
        self.steps, self.seen = steps, 0

    def on_step_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kwargs: Any) -> None:
        self.seen += 1
        factor = min(1.0, self.seen / self.steps)
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * factor


class ReseedingTrainer(Trainer):
    """A Trainer subclass that keeps the random state of its own process on resume instead of the checkpoint's."""

    def _load_rng_state(self, checkpoint: str | None) -> None:
        return None


def _with_arguments(**overrides: Any) -> Any:
    def make(cls: type, output_dir: str, max_steps: int) -> Trainer:
        return make_trainer(output_dir, max_steps, **overrides)
    return make


def _with_warmup_callback(cls: type, output_dir: str, max_steps: int) -> Trainer:
    trainer = make_trainer(output_dir, max_steps)
    trainer.add_callback(WarmupScaling())
    return trainer


def _reseeding(cls: type, output_dir: str, max_steps: int) -> Trainer:
    reference = make_trainer(output_dir, max_steps)
    return ReseedingTrainer(model=reference.model, args=reference.args, train_dataset=reference.train_dataset,
                            eval_dataset=reference.eval_dataset)


def _recipe(name: str, **hooks: Any) -> type[unittest.TestCase]:
    return mutant_class(f"hf_{name}", GPT2TrainerRecipe, StopAndGoConformance, __name__, num_steps=10, stop_step=4,
                        **hooks)


_NOT_APPLICABLE = frozenset({"test_consumed_samples", "test_initial_consumed_samples"}) | UNDECLARED_CHECKS

HF_TRAINER_MUTANTS: tuple[Mutant, ...] = tuple(dataclasses.replace(mutant, skips=_NOT_APPLICABLE) for mutant in (
    Mutant(
        "hf_ignore_data_skip", "ignore_data_skip=True: the resumed run restarts the epoch's data at its first batch",
        _recipe("ignore_data_skip", make_trainer=_with_arguments(ignore_data_skip=True)),
        kills={"test_train_inputs": "first divergence at optimizer step 5, micro-batch 0 (after the resume)"},
        # the restarted epoch also draws its sampler's seed at another point of the RNG stream, and moves the epoch
        may_also_fail=WEIGHTS_DRIFT | {"test_rng_state", "test_global_step"},
    ),
    Mutant(
        "hf_save_only_model", "save_only_model=True: checkpoints keep the weights, not the optimizer, scheduler or RNG",
        _recipe("save_only_model", make_trainer=_with_arguments(save_only_model=True)),
        kills={"test_restored_state": "`exp_avg` of parameter `transformer.wte.weight` is missing (not restored)",
               "test_optimizer_state": "first divergence at optimizer step 5",
               "test_lr_scheduler_state": "first divergence at optimizer step 5",
               "test_checkpoint_contents": "optimizer.pt is not in it"},
        may_also_fail=WEIGHTS_DRIFT | {"test_learning_rate", "test_rng_state"},
    ),
    Mutant(
        "hf_callback_state_not_exported", "a warmup callback keeps its step counter in memory only: warmup restarts",
        _recipe("callback_state_not_exported", make_trainer=_with_warmup_callback),
        kills={"test_learning_rate": "first divergence at optimizer step 5",
               # the callback sets the restarted warmup's rate on the optimizer before the first resumed forward
               "test_restored_state": "optimizer 0: `lr` of param group 0 is"},
        may_also_fail=WEIGHTS_DRIFT,
    ),
    Mutant(
        "hf_rng_not_restored", "a Trainer subclass skips restoring rng_state.pth: dropout after the resume differs",
        _recipe("rng_not_restored", make_trainer=_reseeding),
        kills={"test_rng_state": "first divergence at optimizer step 5, micro-batch 0 (after the resume)",
               "test_train_outputs": "after the resume"},
        may_also_fail=WEIGHTS_DRIFT,
    ),
))
