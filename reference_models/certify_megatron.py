"""The Megatron-core reference recipes under the conformance suites, at tensor-parallel sizes 1 and 2 (needs
megatron-core; ``python -m conformance certify reference_models.certify_megatron`` in ``tox -e nemo``)."""

from __future__ import annotations

import unittest

from conformance import PredictionWriterConformance, StopAndGoConformance
from reference_models.megatron_recipes import MegatronBERTRecipe, MegatronGPTPredictionRecipe, MegatronGPTRecipe


class TestMegatronGPTStopAndGo(MegatronGPTRecipe, StopAndGoConformance, unittest.TestCase):
    """Megatron GPT at TP=1 (one rank), crash after step 4, resumed in a fresh process."""

    num_steps = 7
    stop_step = 4
    interruption = "crash"


class TestMegatronGPTTensorParallelStopAndGo(MegatronGPTRecipe, StopAndGoConformance, unittest.TestCase):
    """Megatron GPT at TP=2 over 2 rank processes: each rank holds half of every attention and MLP matrix and of the
    vocabulary, draws its own attention dropout from the tracker, saves its own checkpoint shard; both ranks are
    SIGKILLed after step 3."""

    tensor_parallel_size = 2
    num_steps = 6
    stop_step = 3
    interruption = "kill"


class TestMegatronBERTStopAndGo(MegatronBERTRecipe, StopAndGoConformance, unittest.TestCase):
    """Megatron BERT at TP=1, random masks every step, checkpoint after step 3 (shared trajectory)."""

    num_steps = 6
    stop_step = 3


class TestMegatronBERTTensorParallelStopAndGo(MegatronBERTRecipe, StopAndGoConformance, unittest.TestCase):
    """Megatron BERT at TP=2 over 2 rank processes, checkpoint after step 4 (shared trajectory)."""

    tensor_parallel_size = 2
    num_steps = 7
    stop_step = 4


class TestMegatronGPTPredictionWriter(MegatronGPTPredictionRecipe, PredictionWriterConformance, unittest.TestCase):
    """The kit's PredictionWriter on the Megatron GPT at TP=1 (every run in a kit process: the recipe's strategy
    forms process groups)."""

    model_parallel_size = 1


class TestMegatronGPTTensorParallelPredictionWriter(MegatronGPTPredictionRecipe, PredictionWriterConformance,
                                                    unittest.TestCase):
    """The kit's PredictionWriter on the Megatron GPT at TP=2: one replica is 2 ranks (two replicas 4), each
    replica's files come from its tensor-parallel rank 0 only."""

    model_parallel_size = 2
