"""The subjects of tests/test_false_verdicts.py: the tiny GPT with and without randomness in its training steps,
neither restoring the RNG, with a StatefulDataLoader data module keeping no consumed-samples count, and with an EMA
callback with and without checkpoint state (classes at module level: their fresh processes import them by name).
Not collected."""

from __future__ import annotations

import unittest
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from conformance import RNGStateCallback, StopAndGoConformance
from reference_models.data import SyntheticTokens
from reference_models.gpt import TinyGPT
from reference_models.recipes import GPTRecipe
from reference_models.transformer import TransformerConfig


class NoDropoutNoRNGRestore(GPTRecipe):
    """The tiny GPT without dropout (its training draws nothing random) and without RNGStateCallback."""

    @classmethod
    def make_model(cls) -> pl.LightningModule:
        return TinyGPT(TransformerConfig(dropout=0.0))

    @classmethod
    def make_callbacks(cls) -> list[pl.Callback]:
        return []


class NoRandomness(NoDropoutNoRNGRestore, StopAndGoConformance, unittest.TestCase):
    num_steps, stop_step = 6, 3


class DropoutWithoutRNGRestore(GPTRecipe, StopAndGoConformance, unittest.TestCase):
    num_steps, stop_step = 6, 3

    @classmethod
    def make_callbacks(cls) -> list[pl.Callback]:
        return []


class StatefulLoaderData(pl.LightningDataModule):
    """A plain Lightning data module whose train loader is torchdata's StatefulDataLoader: Lightning keeps the
    loader's position in its own loop state; the data module keeps no consumed-samples count."""

    def __init__(self) -> None:
        super().__init__()
        self.train_set, self.val_set = SyntheticTokens(44, 16, 64, seed=7), SyntheticTokens(8, 16, 64, seed=8)

    def train_dataloader(self) -> StatefulDataLoader:
        return StatefulDataLoader(self.train_set, batch_size=4, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=4)


class StatefulLoaderDataModule(GPTRecipe, StopAndGoConformance, unittest.TestCase):
    num_steps, stop_step = 8, 4

    @classmethod
    def make_datamodule(cls) -> pl.LightningDataModule:
        return StatefulLoaderData()

    @classmethod
    def trainer_kwargs(cls) -> dict[str, Any]:
        return {"accumulate_grad_batches": 2, "val_check_interval": 2, "limit_val_batches": 2}


class StatefulLoaderCountedByHook(StatefulLoaderDataModule):
    """The same, with the count the README's hint suggests: derived in consumed_samples(trainer), not kept."""

    @classmethod
    def consumed_samples(cls, trainer: Any) -> int | None:
        return trainer.global_step * 8


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

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        with torch.no_grad():
            for name, value in pl_module.state_dict().items():
                if name in self.shadow:
                    self.shadow[name].mul_(self.decay).add_(value, alpha=1 - self.decay)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.exported = {name: value.clone() for name, value in self.shadow.items()}


class CheckpointedEMA(EMAOfWeights):
    """The same EMA, checkpointing its shadow weights."""

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": self.shadow}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.shadow = {name: value.clone() for name, value in state_dict["shadow"].items()}


class EMAWithoutCheckpointState(GPTRecipe, StopAndGoConformance, unittest.TestCase):
    num_steps, stop_step = 6, 3

    @classmethod
    def make_callbacks(cls) -> list[pl.Callback]:
        return [RNGStateCallback(), EMAOfWeights()]


class EMAWithCheckpointState(EMAWithoutCheckpointState):
    @classmethod
    def make_callbacks(cls) -> list[pl.Callback]:
        return [RNGStateCallback(), CheckpointedEMA()]
