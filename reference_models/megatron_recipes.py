"""Recipes of the Megatron-core GPT and BERT (:mod:`reference_models.megatron_gpt`,
:mod:`reference_models.megatron_bert`): training and prediction at a given tensor-parallel size, each rank a CPU
process joined by gloo (needs megatron-core: ``tox -e nemo``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import lightning.pytorch as pl

from reference_models.megatron_bert import MegatronBERT
from reference_models.megatron_gpt import MegatronGPT
from reference_models.recipes import GPTRecipe, PredictionRecipe
from reference_models.tensor_parallel import TensorParallelStrategy


class MegatronGPTRecipe(GPTRecipe):
    """The Megatron GPT, dropout 0.1 in attention (the tracker's tensor-parallel stream) and hidden states (the
    default stream), on ``tensor_parallel_size`` ranks; RNGStateCallback keeps both streams per rank. One
    micro-batch per step (Lightning < 2.5, which NeMo pins, shifts the accumulation window on resume)."""

    tensor_parallel_size: ClassVar[int] = 1
    datamodule_kwargs: ClassVar[Mapping[str, Any]] = {"global_batch_size": 4}

    @classmethod
    def make_model(cls) -> pl.LightningModule:
        return MegatronGPT()

    @classmethod
    def trainer_kwargs(cls) -> dict[str, Any]:
        return {**super().trainer_kwargs(), "devices": cls.tensor_parallel_size, "use_distributed_sampler": False,
                "strategy": TensorParallelStrategy(cls.tensor_parallel_size)}


class MegatronBERTRecipe(MegatronGPTRecipe):
    """The Megatron BERT with fresh random masks every step (the default stream); otherwise the GPT recipe."""

    @classmethod
    def make_model(cls) -> pl.LightningModule:
        return MegatronBERT()


class MegatronGPTPredictionRecipe(PredictionRecipe):
    """The Megatron GPT predicting whole-vocabulary logits, gathered on every rank of its tensor-parallel group; a
    model replica (PredictionWriterConformance's ``model_parallel_size``) is one tensor-parallel group."""

    model_parallel_size: ClassVar[int] = 2

    @classmethod
    def make_model(cls) -> pl.LightningModule:
        return MegatronGPT()

    @classmethod
    def trainer_kwargs(cls) -> dict[str, Any]:
        return {"strategy": TensorParallelStrategy(cls.model_parallel_size)}
