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
from reference_models.transformer import TransformerConfig


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
    python, numpy and torch from (seed, global step, micro-batch, rank), so a checkpoint needs no RNG state."""

    def __init__(self, seed: int = 31, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seed = seed

    def seed_rank(self) -> int:
        """The rank whose random stream this process draws."""
        return self.global_rank

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        micro_batch = batch_idx % self.trainer.accumulate_grad_batches
        position = self.trainer.global_step * 1_009 + micro_batch + self.seed_rank() * 7_919_000
        seed = (self.seed * 1_000_003 + position) % 2**32
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


class StepSeededGPTRecipe(GPTRecipe):
    """The GPT recipe reseeding from the global step in the model instead of restoring RNG states."""

    model_class = StepSeededGPT

    @classmethod
    def make_callbacks(cls) -> list[pl.Callback]:
        return []


class PerRankDropoutGPT(TinyGPT):
    """Draws different dropout masks on every data-parallel rank: when fitting starts, it offsets torch's seed by
    its rank (a resumed run gets its streams back from RNGStateCallback at its first batch)."""

    def on_fit_start(self) -> None:
        torch.manual_seed(torch.initial_seed() + self.global_rank)


class DDPGPTRecipe(GPTRecipe):
    """The GPT recipe on 2 CPU ranks with DDP over gloo: each rank draws its own dropout, RNGStateCallback keeps
    every rank's stream, the data module gives each rank its slice of every global batch."""

    model_class: type[pl.LightningModule] = PerRankDropoutGPT
    ranks: ClassVar[int] = 2

    @classmethod
    def trainer_kwargs(cls) -> dict[str, Any]:
        datamodule = cls.make_datamodule()
        accumulation = datamodule.global_batch_size // (datamodule.micro_batch_size * cls.ranks)
        return {"devices": cls.ranks, "strategy": "ddp", "use_distributed_sampler": False,
                "accumulate_grad_batches": accumulation, "val_check_interval": accumulation, "limit_val_batches": 2}


class ElasticGPTRecipe(StepSeededGPTRecipe, DDPGPTRecipe):
    """The step-seeded DDP GPT recipe with dropout off: a per-rank random stream cannot carry over to another number
    of ranks, so a recipe resuming elastically draws nothing random that depends on the rank layout (or accepts new
    randomness and sets a tolerance for it). Its reseeding keeps the RNG state exact on a same-size resume."""

    @classmethod
    def make_model(cls) -> pl.LightningModule:
        return StepSeededGPT(config=TransformerConfig(dropout=0.0))


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
