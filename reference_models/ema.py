"""Exponential moving averages of a model's weights, as Lightning callbacks are written outside the kit: one that
keeps no checkpoint state, one that checkpoints its shadow weights, and one whose decay warms up with its update
count and checkpoints that count too."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

__all__ = ["CheckpointedEMA", "EMAOfWeights", "WarmupEMA"]


class EMAOfWeights(pl.Callback):
    """An exponential moving average of the weights, as an author writes one: shadow copies made when fit starts,
    updated after every optimizer step, saved beside the model when fit ends. It keeps no checkpoint state."""

    def __init__(self, decay: float = 0.9) -> None:
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] = {}
        self.exported: dict[str, torch.Tensor] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.shadow:
            self.shadow = {name: value.detach().clone() for name, value in pl_module.state_dict().items()
                           if value.is_floating_point()}

    def decay_for_next_update(self) -> float:
        """The decay the next update applies."""
        return self.decay

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        decay = self.decay_for_next_update()
        with torch.no_grad():
            for name, value in pl_module.state_dict().items():
                if name in self.shadow:
                    self.shadow[name].mul_(decay).add_(value, alpha=1 - decay)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.exported = {name: value.clone() for name, value in self.shadow.items()}


class CheckpointedEMA(EMAOfWeights):
    """The same EMA, checkpointing its shadow weights."""

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": self.shadow}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.shadow = {name: value.clone() for name, value in state_dict["shadow"].items()}


class WarmupEMA(CheckpointedEMA):
    """An EMA whose decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates; it checkpoints
    ``n`` beside the shadow weights."""

    def __init__(self, decay: float = 0.99) -> None:
        super().__init__(decay)
        self.updates = 0

    def decay_for_next_update(self) -> float:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        return decay

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "updates": self.updates}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.updates = int(state_dict["updates"])
