"""The reference recipe of the Hugging Face Trainer backend under StopAndGoConformance (collected by unittest and
pytest as it is, and certified by ``python -m conformance certify reference_models.certify_hf``)."""

from __future__ import annotations

import unittest

from conformance import StopAndGoConformance
from reference_models.hf_trainer import GPT2TrainerRecipe


class TestGPT2TrainerStopAndGo(GPT2TrainerRecipe, StopAndGoConformance, unittest.TestCase):
    """The Trainer's own loop, two micro-batches per step; checkpoint of step 4 (shared trajectory), resume in a fresh
    process with resume_from_checkpoint to step 10, across the epoch boundary after step 8."""

    num_steps = 10
    stop_step = 4


class TestGPT2TrainerKilledAtEpochEnd(GPT2TrainerRecipe, StopAndGoConformance, unittest.TestCase):
    """Killed by SIGKILL right after the checkpoint of step 8, the last step of the first epoch; the resumed run
    starts the second epoch."""

    num_steps = 10
    stop_step = 8
    interruption = "kill"
