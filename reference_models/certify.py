"""The reference recipes under StopAndGoConformance: what ``python -m conformance certify`` runs by default.

Each class is what a model author writes in their own repo: hooks, settings, mixin, ``unittest.TestCase``.
"""

from __future__ import annotations

import unittest

from conformance import StopAndGoConformance
from reference_models.recipes import BERTRecipe, GPTRecipe


class TestTinyGPTStopAndGo(GPTRecipe, StopAndGoConformance, unittest.TestCase):
    """GPT, crash after step 4 (mid-epoch), resume to step 8 across an epoch boundary."""

    num_steps = 8
    stop_step = 4
    interruption = "crash"


class TestTinyGPTCleanStopAtEpochEnd(GPTRecipe, StopAndGoConformance, unittest.TestCase):
    """GPT, clean stop after step 5, the last step of the first epoch."""

    num_steps = 8
    stop_step = 5
    interruption = "clean"


class TestTinyBERTStopAndGo(BERTRecipe, StopAndGoConformance, unittest.TestCase):
    """BERT with random masking from the global RNG, crash after step 3."""

    num_steps = 7
    stop_step = 3
    interruption = "crash"
