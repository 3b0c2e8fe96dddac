"""The reference recipes: correct Lightning set-ups of the tiny GPT and BERT that resume exactly.

Each is a mixin of conformance hooks; list it *before* a conformance mixin so its hooks win over the defaults.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, ClassVar

import lightning.pytorch as pl
import numpy as np
import torch

from conformance import RNGStateCallback
from reference_models.bert import TinyBERT
from reference_models.data import SyntheticDataModule
from reference_models.gpt import TinyGPT
from reference_models.prediction_data import PredictionDataModule


class GPTRecipe:
    """Tiny GPT on shuffled synthetic tokens: 2 micro-batches per step, validation after every step."""

    model_class: type[pl.LightningModule] = TinyGPT
    datamodule_class: type[SyntheticDataModule] = SyntheticDataModule
    datamodule_kwargs: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def make_model(cls) -> pl.LightningModule:
        return cls.model_class()

    @classmethod
    def make_datamodule(cls) -> SyntheticDataModule:
        return cls.datamodule_class(**cls.datamodule_kwargs)

    @classmethod
    def trainer_kwargs(cls) -> dict[str, Any]:
        datamodule = cls.make_datamodule()
        return {
            "accumulate_grad_batches": datamodule.accumulate_grad_batches,
            "val_check_interval": datamodule.accumulate_grad_batches,
            "limit_val_batches": 2,
        }

    @classmethod
    def make_callbacks(cls) -> list[pl.Callback]:
        return [RNGStateCallback()]


class StepSeededGPT(TinyGPT):
    """Draws its randomness from the training position, Megatron style: its own ``on_train_batch_start`` reseeds
    python, numpy and torch from (seed, global step, micro-batch), so a checkpoint needs no RNG state."""

    def __init__(self, seed: int = 31, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seed = seed

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        micro_batch = batch_idx % self.trainer.accumulate_grad_batches
        seed = (self.seed * 1_000_003 + self.trainer.global_step * 1_009 + micro_batch) % 2**32
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


class StepSeededGPTRecipe(GPTRecipe):
    """The GPT recipe reseeding from the global step in the model instead of restoring RNG states."""

    model_class = StepSeededGPT

    @classmethod
    def make_callbacks(cls) -> list[pl.Callback]:
        return []


class BERTRecipe(GPTRecipe):
    """Tiny BERT with fresh random masks every step; otherwise the GPT recipe."""

    model_class = TinyBERT


class PredictionRecipe:
    """Tiny GPT predicting logits for 45 sequences of varying length in batches of 4 (a partial last batch, an
    uneven split over two ranks); 12288 sequences in batches of 128 (48 MiB of logits) for the memory check."""

    @classmethod
    def make_model(cls) -> pl.LightningModule:
        return TinyGPT()

    @classmethod
    def make_datamodule(cls) -> PredictionDataModule:
        return PredictionDataModule(ragged=True)

    @classmethod
    def make_memory_datamodule(cls) -> PredictionDataModule:
        return PredictionDataModule(num_samples=12288, batch_size=128)
