"""The subjects of tests/test_rng_verdicts.py: the tiny GPT with and without randomness in its training steps,
neither restoring the RNG (classes at module level: their fresh processes import them by name). Not collected."""

from __future__ import annotations

import unittest

import lightning.pytorch as pl

from conformance import StopAndGoConformance
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
