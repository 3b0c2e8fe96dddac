"""Broken variants of the loop-backend GPT recipe under StopAndGoConformance: resume bugs of plain PyTorch loops
with torch.distributed.checkpoint and torchdata's StatefulDataLoader, each seen in real training code."""

from __future__ import annotations

import dataclasses
import unittest
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from torchdata.stateful_dataloader import StatefulDataLoader

from conformance import StopAndGoConformance, TrainingState
from conformance.runs.loop.checkpoint import load_training_state
from conformance.training.rng import capture_rng_state, restore_rng_state
from reference_models.data import SyntheticTokens
from reference_models.fabric_loop import FabricGPTRecipe
from reference_models.mutants import Mutant, mutant_class
from reference_models.mutants.stop_and_go import UNDECLARED_CHECKS, WEIGHTS_DRIFT
from reference_models.torch_loop import GPTLoopRecipe
from reference_models.transformer import Transformer

__all__ = ["LOOP_MUTANTS"]

# --- broken building blocks -----------------------------------------------------------------------------------


class StateWithoutSchedulers(TrainingState):
    """An application state that forgets the LR schedulers: the schedule restarts at warmup after a resume."""

    def state_dict(self) -> dict[str, Any]:
        return {key: value for key, value in super().state_dict().items() if key != "lr_schedulers"}

    def load_state_dict(self, state: Any) -> None:
        super().load_state_dict({**state, "lr_schedulers": [s.state_dict() for s in self.lr_schedulers]})


class StateWithoutLoader(TrainingState):
    """An application state without the data loader: the resumed epoch starts again from its first batch."""

    def state_dict(self) -> dict[str, Any]:
        return {key: value for key, value in super().state_dict().items() if key != "train_loader"}

    def load_state_dict(self, state: Any) -> None:
        super().load_state_dict({**state, "train_loader": {}})


class StateWithoutLoopPosition(TrainingState):
    """An application state without the step counter: the resumed run starts counting at step 0 again."""

    def state_dict(self) -> dict[str, Any]:
        return {key: value for key, value in super().state_dict().items() if key != "loop"}

    def load_state_dict(self, state: Any) -> None:
        super().load_state_dict({**state, "loop": {"step": 0, "epoch": 0}})


class StateWithSharedLoaderKey(TrainingState):
    """Saves every rank's loader state under one key, as if it were replicated: DCP keeps one rank's copy (of the
    rank with the smallest save plan, not necessarily rank 0), so every rank resumes at that rank's position
    (per-rank state saved from one process only, as in accelerate #3938)."""

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        return {**state, "train_loader": self.train_loader.state_dict()}

    def load_state_dict(self, state: Any) -> None:
        self.train_loader.load_state_dict(state["train_loader"])
        super().load_state_dict({**state, "train_loader": {}})


class EagerRNGState:
    """Restores the RNG the moment the checkpoint is loaded: creating the loader's iterator then draws its base seed
    from the restored stream, shifting every later draw (Megatron-Bridge #5257)."""

    def state_dict(self) -> dict[str, Any]:
        return capture_rng_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        restore_rng_state(state)


class RunningScaleTransformer(Transformer):
    """Scales its logits by a running mean of their magnitude, kept in a non-persistent buffer: the statistic is
    not in the state dict, so a resumed model starts it afresh."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("running_scale", torch.ones(()), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = super().forward(tokens)
        if self.training:
            self.running_scale.mul_(0.9).add_(0.1 * logits.detach().abs().mean())
        return logits / self.running_scale


@dataclasses.dataclass
class RunMetadata:
    """Run metadata stored as a custom object in the checkpoint (unpicklable by a weights-only load)."""

    recipe: str = "gpt-loop"


class RotatingValidationShards:
    """Validates on the next of several shards at every pass, the pass counted in a module-level variable: a fresh
    process after the preemption starts the rotation again."""

    def __init__(self, shards: int = 3) -> None:
        self.loaders = [DataLoader(SyntheticTokens(4, 16, 64, seed=20 + shard), batch_size=4) for shard in range(shards)]

    def __iter__(self) -> Any:
        _VALIDATION_PASSES["count"] += 1
        return iter(self.loaders[_VALIDATION_PASSES["count"] % len(self.loaders)])


class SampleCounter:
    """Counts the samples trained on for the recipe's consumed-samples report, but exports no state (its author
    thought of it as a metric)."""

    def __init__(self, per_step: int) -> None:
        self.per_step = per_step
        self.samples = 0

    def on_train_step_end(self) -> None:
        self.samples += self.per_step

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


_VALIDATION_PASSES = {"count": 0}
_STEPS_TAKEN = {"count": 0}  # a module-level step counter: a fresh process after the preemption starts it at 0


# --- the broken recipes ---------------------------------------------------------------------------------------


def _as(state_class: type[TrainingState]) -> Any:
    """A ``make_training_state`` returning the reference state as an instance of ``state_class``."""
    def make_training_state(cls: type) -> TrainingState:
        state = GPTLoopRecipe.make_training_state.__func__(cls)  # type: ignore[attr-defined]
        return state_class(**{field.name: getattr(state, field.name) for field in dataclasses.fields(state)})
    return make_training_state


def _recipe(name: str, base: type = GPTLoopRecipe, **hooks: Any) -> type[unittest.TestCase]:
    return mutant_class(f"loop_{name}", base, StopAndGoConformance, __name__, **hooks)


def _per_rank_shuffled_loader(cls: type, rank: int, world_size: int) -> StatefulDataLoader:
    """Each rank shuffles its own shard with its own generator (so each rank's loader state differs)."""
    dataset = SyntheticTokens(44, cls.config.seq_len, cls.config.vocab_size, seed=7)
    shard = Subset(dataset, range(rank, len(dataset), world_size))
    return StatefulDataLoader(shard, batch_size=cls.global_batch_size // world_size, shuffle=True, drop_last=True,
                              generator=torch.Generator().manual_seed(100 + rank))


def _partly_restoring_load(cls: type, state: TrainingState, directory: Path) -> None:
    """Loads the checkpoint, then keeps the optimizer state of only every other parameter (a converter that maps
    only some parameter names, Megatron-LM #6920: "the loss curve looks normal")."""
    load_training_state(state, directory)
    for optimizer in state.optimizers:
        for parameter in list(optimizer.state)[::2]:
            del optimizer.state[parameter]


def _pickling_save(cls: type, state: TrainingState, directory: Path) -> None:
    torch.save({"state": state.state_dict(), "metadata": RunMetadata()}, directory)


def _pickling_load(cls: type, state: TrainingState, directory: Path) -> None:
    state.load_state_dict(torch.load(directory, weights_only=False)["state"])


def _warmup_from_module_counter(cls: type, state: TrainingState, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sets the learning rate from a step counter kept in a module-level variable, not in the state."""
    _STEPS_TAKEN["count"] += 1
    for optimizer in state.optimizers:
        for group in optimizer.param_groups:
            group["lr"] = 3e-3 * min(1.0, _STEPS_TAKEN["count"] / 6)
    return GPTLoopRecipe.train_step.__func__(cls, state, batch)  # type: ignore[attr-defined]


def _running_scale_state(cls: type) -> TrainingState:
    state = GPTLoopRecipe.make_training_state.__func__(cls)  # type: ignore[attr-defined]
    model = RunningScaleTransformer(cls.config, causal=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, state.lr_schedulers[0].lr_lambdas[0])
    return dataclasses.replace(state, model=model, optimizers=[optimizer], lr_schedulers=[scheduler])


def _fabric_state_without_loader(cls: type, state: Any) -> dict[str, Any]:
    """Fabric's checkpoint as its documentation's example has it: model, optimizer and counters, no data loader."""
    saved = FabricGPTRecipe.checkpoint_state.__func__(cls, state)  # type: ignore[attr-defined]
    return {key: value for key, value in saved.items() if key != "loader"}


def _at_learning_rate(learning_rate: float) -> Any:
    """A ``train_step`` that sets every param group's learning rate to ``learning_rate`` first."""
    def train_step(cls: type, state: TrainingState, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        for optimizer in state.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
        return GPTLoopRecipe.train_step.__func__(cls, state, batch)  # type: ignore[attr-defined]
    return train_step


def _rotating_validation(cls: type) -> TrainingState:
    state = GPTLoopRecipe.make_training_state.__func__(cls)  # type: ignore[attr-defined]
    return dataclasses.replace(state, val_loader=RotatingValidationShards())


def _counted_state(cls: type) -> dict[str, Any]:
    return {**GPTLoopRecipe.make_stateful.__func__(cls), "samples": SampleCounter(cls.global_batch_size)}


def _counted_samples(cls: type, state: TrainingState) -> int:
    return state.stateful["samples"].samples


_EVERY_CHECK = frozenset(StopAndGoConformance.check_names())

_MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "loop_scheduler_not_checkpointed", "the application state saves no LR scheduler: warmup restarts",
        _recipe("scheduler_not_checkpointed", make_training_state=_as(StateWithoutSchedulers)),
        kills={"test_restored_state": "LR scheduler 0: `last_epoch` is 0, the saving run had 4",
               "test_lr_scheduler_state": "first divergence at optimizer step 5",
               "test_learning_rate": "first divergence at optimizer step 6",
               "test_checkpoint_contents": "LR scheduler 0's position (last_epoch=4) is not in it"},
        may_also_fail=WEIGHTS_DRIFT,
    ),
    Mutant(
        "loop_loader_not_checkpointed", "the application state saves no loader: the epoch restarts at batch 0",
        _recipe("loader_not_checkpointed", make_training_state=_as(StateWithoutLoader)),
        kills={"test_train_inputs": "first divergence at optimizer step 5, micro-batch 0 (after the resume)",
               "test_checkpoint_contents": "rank 0's train-loader state is not in it"},
        may_also_fail=WEIGHTS_DRIFT | {"test_global_step"},  # the replayed epoch ends later
    ),
    Mutant(
        "loop_rng_restored_before_iter", "RNG restored at load time: iter(loader) then draws from the restored stream",
        _recipe("rng_restored_before_iter", stop_step=3, make_stateful=lambda cls: {"rng": EagerRNGState()}),
        kills={"test_rng_state": "first divergence at optimizer step 4, micro-batch 0 (after the resume)",
               "test_train_outputs": "after the resume"},
        may_also_fail=WEIGHTS_DRIFT,
    ),
    Mutant(
        "loop_loader_state_of_rank_0_only", "every rank's loader state saved under one key: all resume as rank 0",
        _recipe("loader_state_of_rank_0_only", num_ranks=2, num_steps=6, stop_step=3,
                make_train_loader=_per_rank_shuffled_loader, make_training_state=_as(StateWithSharedLoaderKey)),
        kills={"test_train_inputs": "at optimizer step 4, micro-batch 0 (after the resume)",
               "test_checkpoint_contents": "train-loader state is not in it"},
        may_also_fail=WEIGHTS_DRIFT,
    ),
    Mutant(
        "loop_optimizer_state_partly_restored", "the load keeps the optimizer state of every other parameter only",
        _recipe("optimizer_state_partly_restored", load_state=_partly_restoring_load),
        kills={"test_optimizer_state": "first divergence at optimizer step 5",
               "test_restored_state": "optimizer 0: `exp_avg` of parameter"},
        may_also_fail=WEIGHTS_DRIFT,
    ),
    Mutant(
        "loop_lr_from_module_counter", "the warmup reads a module-level step counter that restarts in a new process",
        _recipe("lr_from_module_counter", train_step=_warmup_from_module_counter),
        kills={"test_learning_rate": "first divergence at optimizer step 5"},
        may_also_fail=WEIGHTS_DRIFT | {"test_lr_scheduler_state"},
    ),
    Mutant(
        "loop_module_buffer_not_saved", "a running statistic in a non-persistent buffer restarts after the resume",
        _recipe("module_buffer_not_saved", make_training_state=_running_scale_state),
        kills={"test_train_outputs": "first divergence at optimizer step 5, micro-batch 0 (after the resume)",
               "test_train_loss": "after the resume", "test_valid_outputs": "after the resume",
               "test_final_weights": "ends with different weights"},
        may_also_fail=WEIGHTS_DRIFT,
    ),
    Mutant(
        "loop_validation_rotation_restarts", "validation rotates shards by a module-level pass counter",
        _recipe("validation_rotation_restarts", make_training_state=_rotating_validation),
        kills={"test_valid_inputs": "after the resume", "test_valid_outputs": "after the resume",
               "test_valid_loss": "after the resume"},
    ),
    Mutant(
        "loop_sample_counter_not_saved", "the consumed-samples counter keeps no state: it restarts at 0",
        _recipe("sample_counter_not_saved", make_stateful=_counted_state, consumed_samples=_counted_samples),
        kills={"test_initial_consumed_samples": "replays data", "test_consumed_samples": "after the resume"},
    ),
    Mutant(
        "loop_loss_goes_nan", "a learning rate of 1e4: the loss is NaN within a few steps",
        _recipe("loss_goes_nan", train_step=_at_learning_rate(1e4)),
        kills={"test_runs_trained": "non-finite training loss"},
        may_also_fail=_EVERY_CHECK,
    ),
    Mutant(
        "loop_checkpoint_pickles_objects", "save_state torch.saves a custom object: only an unpickling load reads it",
        _recipe("checkpoint_pickles_objects", save_state=_pickling_save, load_state=_pickling_load),
        kills={"test_checkpoint_contents": "cannot be read with weights-only loading"},
    ),
    Mutant(
        "fabric_loader_not_saved", "fabric.save of model, optimizer, scheduler and counters, not of the loader",
        _recipe("fabric_loader_not_saved", base=FabricGPTRecipe, checkpoint_state=_fabric_state_without_loader),
        kills={"test_train_inputs": "first divergence at optimizer step 5, micro-batch 0 (after the resume)",
               "test_checkpoint_contents": "rank 0's train-loader state is not in it"},
        may_also_fail=WEIGHTS_DRIFT | {"test_global_step"},
    ),
    Mutant(
        "loop_position_not_checkpointed", "the application state saves no step counter: the resume starts at step 0",
        _recipe("position_not_checkpointed", make_training_state=_as(StateWithoutLoopPosition)),
        kills={"test_global_step": "the resumed run recorded [optimizer step 1;",
               "test_checkpoint_contents": "the loop's step (4) is not in it"},
        may_also_fail=_EVERY_CHECK,
    ),
)

#: The loop backend's mutants; the consumed-samples checks do not apply to its StatefulDataLoader recipes unless
#: they report a count.
LOOP_MUTANTS: tuple[Mutant, ...] = tuple(
    dataclasses.replace(mutant, skips=mutant.skips | UNDECLARED_CHECKS | (
        set() if "consumed_samples" in vars(mutant.conformance_class.__mro__[1])
        else {"test_consumed_samples", "test_initial_consumed_samples"}))
    for mutant in _MUTANTS
)
