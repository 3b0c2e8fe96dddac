"""The Lightning backend: a recipe of ``make_model()`` (a LightningModule) and ``make_datamodule()`` trained by
``lightning.Trainer`` with the arguments of its ``trainer_kwargs()``; NeMo 2's MegatronStrategy as a refinement
(``nemo.lightning.Trainer``, kit rank processes, the CPU emulation where there is no CUDA)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
from lightning.pytorch.strategies import DDPStrategy

from conformance._setup_checks import built_object_problems
from conformance.errors import ConformanceSetupError
from conformance.runs.backend import CheckpointUnreadable, FitPlan, RunOutcome
from conformance.runs.lightning.checkpoint_contents import checkpoint_problems
from conformance.runs.lightning.fit import run_fits
from conformance.runs.lightning.setup_checks import (
    accelerator_problems,
    callback_list_problems,
    distributed_sampler_problems,
)
from conformance.runs.lightning.trainer import environment_label, world_size_of
from conformance.runs.nemo.strategy import is_nemo_strategy
from conformance.runs.nemo.strategy import recipe_problems as nemo_recipe_problems
from conformance.training.checkpoints import load_checkpoint, saved_checkpoint
from conformance.training.recordstore import RecordStore

__all__ = ["LIGHTNING", "LightningBackend"]

#: Where a Lightning recipe's remedy names the Lightning way of doing it.
_REMEDIES = {
    "rng_state": "the random state is not restored: add conformance.RNGStateCallback() to make_callbacks(), or "
                 "reseed python, numpy and torch (and Megatron's model-parallel RNG tracker, if the model draws "
                 "from it) from the global step (and micro-batch and data-parallel rank, so that ranks draw "
                 "different masks) where each micro-batch starts: the model's on_train_batch_start, or its "
                 "data_step under NeMo's strategy (one Lightning batch holds all micro-batches of a step there)",
    "train_inputs": "the data position is not restored: keep the consumed-samples count in the data module's "
                    "state_dict() and start the train loader after it (conformance.ResumableDataModule does)",
    "global_step": "the trainer's loop state (global step, epoch) is not restored: keep 'loops' in checkpoints",
    "consumed_samples": "the data module's consumed-samples count is not restored or counted from the wrong step",
}

_HINTS = {
    "learning_rate": "no optimizer step used a learning rate: configure_optimizers() returned no optimizer",
    "train_outputs": "the LightningModule's forward was never called during training_step; call the model as "
                     "self(...) so the kit can observe its outputs",
    "train_inputs": "training_step received no batch",
    "train_loss": "training_step returned no loss",
    "valid_inputs": "no validation ran after the resume point in the uninterrupted run; give the recipe a "
                    "val_dataloader (the suite validates every validate_every_n_steps steps unless trainer_kwargs() "
                    "sets its own val_check_interval or check_val_every_n_epoch)",
    "valid_outputs": "the LightningModule's forward was never called during validation_step, or no validation ran "
                     "after the resume point",
    "valid_loss": "validation_step returned no loss (return it, besides logging it), or no validation ran after "
                  "the resume point",
}


class LightningBackend:
    """Runs recipes through ``lightning.Trainer`` (see the module docstring)."""

    required_hooks: ClassVar[tuple[str, ...]] = ("make_model", "make_datamodule")
    not_applicable: ClassVar[Mapping[str, str]] = {}
    #: A data module keeping no consumed-samples count (a torchdata StatefulDataLoader's position lives in
    #: Lightning's loop state) is not failed for the shape of its state: its position is judged by the inputs.
    unreported_consumed_samples: ClassVar[str] = (
        "the data module keeps no consumed-samples count in its state_dict() (a stateful loader's position is in "
        "Lightning's loop state); the data position is judged by test_train_inputs. Keep 'consumed_samples' in the "
        "data module's state (conformance.ResumableDataModule does) or override consumed_samples(trainer) to have "
        "the count checked")

    def label(self, recipe: type) -> str:
        """"Lightning", or "NeMo 2 MegatronStrategy" for a recipe on NeMo's strategy."""
        return "NeMo 2 MegatronStrategy" if is_nemo_strategy(_strategy(recipe)) else "Lightning"

    def settings_problems(self, recipe: type) -> list[str]:
        kwargs = recipe.trainer_kwargs()
        if not isinstance(kwargs, Mapping):
            return [(f"trainer_kwargs() returned a {type(kwargs).__qualname__}: return a dict of lightning.Trainer "
                     "arguments")]
        owned = sorted(recipe.owned_trainer_kwargs & set(kwargs))
        if owned:
            return [(f"trainer_kwargs() sets {owned}, which the kit controls in this suite's runs (run length, "
                     "devices, callbacks and logging folder come from the suite's settings and make_callbacks()); "
                     "remove them")]
        return []

    def recipe_problems(self, recipe: type) -> list[str]:
        kwargs = recipe.trainer_kwargs()
        problems = accelerator_problems(dict(kwargs)) if isinstance(kwargs, Mapping) else []
        if "make_model" in recipe.required_hooks:
            problems += built_object_problems("make_model()", recipe.make_model, pl.LightningModule, (
                "put the model in a lightning.pytorch.LightningModule with training_step and configure_optimizers"))[0]
        if "make_datamodule" in recipe.required_hooks:
            found, datamodule = built_object_problems("make_datamodule()", recipe.make_datamodule,
                                                      pl.LightningDataModule, (
                "return a lightning.pytorch.LightningDataModule that builds the loaders (its state_dict is what a "
                "checkpoint keeps of the data position)"))
            problems += found or recipe.datamodule_problems(datamodule, self._data_parallel_ranks(recipe))
        return problems + callback_list_problems(recipe.make_callbacks)

    def _data_parallel_ranks(self, recipe: type) -> int:
        """The world size under plain DDP; 1 under a model-parallel strategy, whose data-parallel size is known only
        once it runs."""
        try:
            world_size = self.world_size(recipe)
        except ConformanceSetupError:
            return 1  # reported by the settings check
        return world_size if _is_data_parallel_only(_strategy(recipe)) else 1

    def fit_problems(self, recipe: type) -> list[str]:
        """Problems of the recipe's training runs beyond what its hooks build: the data split over ranks, NeMo's
        strategy settings (this builds the recipe once more: only where it is needed)."""
        world_size = self.world_size(recipe)
        problems = distributed_sampler_problems(recipe.trainer_kwargs(), recipe.make_datamodule()) \
            if world_size > 1 else []
        strategy = _strategy(recipe)
        if not problems and is_nemo_strategy(strategy):
            problems += nemo_recipe_problems(strategy, world_size, recipe.make_model(), recipe.make_datamodule())
        return problems

    def world_size(self, recipe: type) -> int:
        return world_size_of(recipe.trainer_kwargs())

    def environment_label(self, recipe: type) -> str | None:
        return environment_label(recipe.trainer_kwargs())

    def runs_in_process(self, recipe: type) -> bool:
        """One device, no elastic resume, ``resume_in_fresh_process`` off, and not NeMo's strategy (it sets
        process-wide state; on the CPU it needs the kit's emulation)."""
        return (not recipe.resume_in_fresh_process and self.world_size(recipe) == 1
                and not recipe.elastic_resume_world_sizes and not is_nemo_strategy(_strategy(recipe)))

    def run_fits(self, recipe: type, plans: Sequence[FitPlan], *, in_process: bool, deadline_s: float
                 ) -> list[list[RunOutcome]]:
        return run_fits(recipe, plans, in_process=in_process, deadline_s=deadline_s)

    def saved_checkpoint(self, path: Path) -> Path | None:
        return saved_checkpoint(path)

    def checkpoint_problems(self, path: Path, records: Sequence[RecordStore], stop_step: int
                            ) -> tuple[str, list[str]]:
        try:
            checkpoint = load_checkpoint(path)
        except Exception as exc:
            raise CheckpointUnreadable(
                f"the checkpoint cannot be loaded with torch.load(weights_only=True), as Lightning >= 2.6 loads it: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0]}. Store recipe state (RNG, data module, "
                "callbacks) as tensors and plain Python values, not numpy arrays or custom objects") from exc
        summary = (f"{checkpoint.format}: {len(checkpoint.state)} top-level entries"
                   + (f" and {len(checkpoint.sharded)} sharded tensors" if checkpoint.is_sharded else "") + " verified")
        return summary, checkpoint_problems(checkpoint, records, stop_step)

    def remedies(self) -> Mapping[str, str]:
        return _REMEDIES

    def hints(self) -> Mapping[str, str]:
        return _HINTS


def _is_data_parallel_only(strategy: Any) -> bool:
    """Whether ``strategy`` splits every batch over all ranks (DDP), so its data-parallel size is the world size."""
    if strategy is None or isinstance(strategy, str):
        return strategy is None or strategy.startswith("ddp")
    return type(strategy) is DDPStrategy


def _strategy(recipe: type) -> Any:
    kwargs = recipe.trainer_kwargs()
    return kwargs.get("strategy") if isinstance(kwargs, Mapping) else None


#: The one instance suites use.
LIGHTNING = LightningBackend()
