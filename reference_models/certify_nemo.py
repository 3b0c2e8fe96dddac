"""The NeMo 2 reference recipe (nl.MegatronStrategy) under the stop-and-go suite, at tensor-parallel sizes 1 and
2; on the CPU every run is a kit rank process under the "NeMo strategy on CPU emulation" (needs ``tox -e nemo``:
``python -m conformance certify reference_models.certify_nemo``)."""

from __future__ import annotations

import unittest

from conformance import StopAndGoConformance
from reference_models.nemo_gpt import NeMoGPTRecipe


class TestNeMoGPTStopAndGo(NeMoGPTRecipe, StopAndGoConformance, unittest.TestCase):
    """NeMo GPT at TP=1 (one rank), 2 micro-batches per step, checkpoint after step 3 (shared trajectory)."""


class TestNeMoGPTTensorParallelStopAndGo(NeMoGPTRecipe, StopAndGoConformance, unittest.TestCase):
    """NeMo GPT at TP=2 over 2 rank processes, every rank SIGKILLed after step 3."""

    tensor_parallel_size = 2
    interruption = "kill"
