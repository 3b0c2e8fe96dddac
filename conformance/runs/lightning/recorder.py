"""The Lightning adapter of :class:`conformance.training.recorder.StepRecorder`: a callback writing the streams of
:mod:`conformance.training.streams` while ``lightning.Trainer`` trains. Besides them it writes ``start`` (global
step, consumed samples, data module class), ``initial_weights`` and ``final_weights``, keyed by the global step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from typing_extensions import override

from conformance._wrapping import unwrap_method, wrap_method
from conformance.runs.lightning.callback_state import callback_tensors
from conformance.training.data import datamodule_consumed_samples
from conformance.training.recorder import StepRecorder
from conformance.training.recordstore import Key, RecordStore, to_record

__all__ = ["TrainingRecorder"]


class TrainingRecorder(pl.Callback):
    """Writes the streams listed in this module's docstring into a :class:`RecordStore` while a run trains.

    Per-micro-batch records are taken around each ``training_step``/``validation_step`` call, numbered by the calls
    within the optimizer step (or validation pass): Lightning makes one call per batch, NeMo's MegatronStrategy one
    per micro-batch inside one Lightning batch, whose batch hooks see NeMo's data iterator, not the batch.

    It only observes: it never changes the model, the optimizer, the data or any random state.
    """

    def __init__(self, store: RecordStore,
                 consumed_samples: Callable[[pl.Trainer], int | None] = datamodule_consumed_samples,
                 recipe_callbacks: Sequence[pl.Callback] = ()) -> None:
        self.store = store
        self.steps = StepRecorder(store)
        self.consumed_samples = consumed_samples
        #: The recipe's own callbacks, whose tensors a resume must give back.
        self.recipe_callbacks = tuple(recipe_callbacks)
        self._hook: torch.utils.hooks.RemovableHandle | None = None
        self._forward_outputs: list[Any] | None = None
        #: training_step or validation_step calls in progress: forward calls are observed only inside one (under
        #: DDP, Lightning routes the step itself through the module's __call__, so its forward hook also fires
        #: around the whole step, with the step's output).
        self._steps_running = 0
        self._learning_rates: list[list[float]] = []
        self._batch_step = -1
        self._micro_batch = 0
        self._sanity_checking = False
        self._validation_step = -1
        self._validation_pass = 0
        self._validation_dataloader = 0
        self._validation_batch = 0
        self._trainer: pl.Trainer | None = None
        self._module: pl.LightningModule | None = None

    # --- observing the model ---------------------------------------------------------------------------------
    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._trainer, self._module = trainer, pl_module
        self._hook = pl_module.register_forward_hook(self._capture_forward)
        wrap_method(pl_module, "training_step", self._observe_training_step)
        wrap_method(pl_module, "validation_step", self._observe_validation_step)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.store.close()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        unwrap_method(pl_module, "training_step")
        unwrap_method(pl_module, "validation_step")

    def _observe_training_step(self, training_step: Callable[..., Any], args: tuple[Any, ...],
                               kwargs: dict[str, Any]) -> Any:
        """Record what ``training_step`` starts from, after every batch-start hook (callbacks, module, strategy)
        ran: a recipe that reseeds in its own ``on_train_batch_start`` is observed after it reseeded. Then record
        what it computed."""
        key = (self._batch_step, self._micro_batch)
        self._micro_batch += 1
        trainer = self._trainer
        assert trainer is not None and self._module is not None, "on_fit_start wraps training_step"
        self.steps.state_restored(self._batch_step, self._module, trainer.optimizers,
                                  [config.scheduler for config in trainer.lr_scheduler_configs])
        self.steps.micro_batch_starts(key, args[0] if args else kwargs.get("batch"))  # before any in-place change
        return self._observe_step("train", key, training_step, args, kwargs)

    def _observe_validation_step(self, validation_step: Callable[..., Any], args: tuple[Any, ...],
                                 kwargs: dict[str, Any]) -> Any:
        if self._sanity_checking:
            return validation_step(*args, **kwargs)
        key = (self._validation_step, self._validation_pass, self._validation_dataloader, self._validation_batch)
        self._validation_batch += 1
        self.steps.validation_batch_starts(key, args[0] if args else kwargs.get("batch"))
        return self._observe_step("valid", key, validation_step, args, kwargs)

    def _observe_step(self, phase: str, key: Key, step: Callable[..., Any], args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> Any:
        """Run one step, recording what ``forward`` returned inside it and the loss it returned."""
        self._forward_outputs = []
        self._steps_running += 1
        try:
            output = step(*args, **kwargs)
        finally:
            self._steps_running -= 1
        self.steps.step_computed(phase, key, self._forward_outputs, _loss_of(output))
        self._forward_outputs = None
        return output

    def _capture_forward(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self._forward_outputs is not None and self._steps_running:
            self._forward_outputs.append(to_record(output))

    # --- training --------------------------------------------------------------------------------------------
    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step
        datamodule = getattr(trainer, "datamodule", None)
        self.steps.training_starts(step, self.consumed_samples(trainer),
                                   None if datamodule is None else type(datamodule).__qualname__, pl_module.state_dict(),
                                   data_keeps_count=datamodule_consumed_samples(trainer) is not None)
        self.steps.callbacks_restored(step, callback_tensors(self.recipe_callbacks))

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        step = trainer.global_step
        if step != self._batch_step:
            self._micro_batch = 0
        self._batch_step = step
        self._learning_rates = []

    @override
    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        self._learning_rates.append([group["lr"] for group in optimizer.param_groups])

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._batch_step:
            return
        self.steps.optimizer_step_ends(step, trainer.current_epoch, self._learning_rates, self.consumed_samples(trainer),
                                       [opt.state_dict() for opt in trainer.optimizers],
                                       [config.scheduler.state_dict() for config in trainer.lr_scheduler_configs],
                                       callback_tensors(self.recipe_callbacks))

    @override
    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self.steps.checkpoint_saved(trainer.global_step, pl_module.state_dict(), None,
                                    callback_tensors(self.recipe_callbacks))

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.steps.training_ends(trainer.global_step, pl_module.state_dict())

    # --- validation ------------------------------------------------------------------------------------------
    @override
    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sanity_checking = True

    @override
    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sanity_checking = False

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            step = trainer.global_step
            self._validation_pass = self._validation_pass + 1 if step == self._validation_step else 0
            self._validation_step = step
            self._validation_dataloader, self._validation_batch = 0, 0

    @override
    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx != self._validation_dataloader:
            self._validation_dataloader, self._validation_batch = dataloader_idx, 0


def _loss_of(step_output: Any) -> Any:
    if isinstance(step_output, Mapping):
        return step_output.get("loss")
    return step_output
