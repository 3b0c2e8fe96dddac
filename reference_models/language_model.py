"""The training recipe shared by the reference models: AdamW, linear warmup then cosine decay, stepped per step."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch


class WarmupCosine:
    """LR multiplier: linear warmup over ``warmup_steps``, then cosine decay to ``min_ratio`` at ``total_steps``."""

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float) -> None:
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_ratio = min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class LanguageModelModule(pl.LightningModule):
    """Lightning plumbing for a language model: subclasses define ``forward`` and ``loss(batch, training)``."""

    def __init__(self, lr: float = 3e-3, weight_decay: float = 0.01, warmup_steps: int = 3,
                 total_steps: int = 50, min_lr_ratio: float = 0.1) -> None:
        super().__init__()
        self.lr = lr
        self.weight_decay = weight_decay
        self.schedule = WarmupCosine(warmup_steps, total_steps, min_lr_ratio)

    def loss(self, batch: dict[str, torch.Tensor], *, training: bool) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch, training=True)
        self.log("train_loss", loss, batch_size=len(batch["tokens"]))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch, training=False)
        self.log("val_loss", loss, batch_size=len(batch["tokens"]))
        return loss

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """What a prediction writer stores: each sample's dataset index and the logits of every position."""
        return {"idx": batch["idx"], "logits": self(batch["tokens"])}

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
