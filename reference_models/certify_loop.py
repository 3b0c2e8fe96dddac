"""The reference recipes of the loop backend under StopAndGoConformance (collected by unittest and pytest as they
are, and certified by ``python -m conformance certify reference_models.certify_loop``)."""

from __future__ import annotations

import unittest

from conformance import StopAndGoConformance
from reference_models.fabric_loop import FabricGPTRecipe
from reference_models.torch_loop import GPTLoopRecipe


class TestGPTLoopStopAndGo(GPTLoopRecipe, StopAndGoConformance, unittest.TestCase):
    """One rank; checkpoint after step 4 (mid-epoch, shared trajectory), resume in a fresh process to step 8 across
    an epoch boundary."""

    num_steps = 8
    stop_step = 4


class TestGPTLoopCleanStopAtEpochEnd(GPTLoopRecipe, StopAndGoConformance, unittest.TestCase):
    """One rank; clean stop after step 5, the last batch of the first epoch."""

    num_steps = 7
    stop_step = 5
    interruption = "clean"


class TestGPTLoopDDPStopAndGo(GPTLoopRecipe, StopAndGoConformance, unittest.TestCase):
    """Two DDP ranks over gloo, each with its own loader position; every rank killed by SIGKILL after the
    checkpoint of step 3."""

    num_ranks = 2
    num_steps = 6
    stop_step = 3
    interruption = "kill"


class TestFabricGPTStopAndGo(FabricGPTRecipe, StopAndGoConformance, unittest.TestCase):
    """Lightning Fabric on one CPU device, checkpointed by fabric.save/fabric.load after step 4 (shared
    trajectory)."""

    num_steps = 8
    stop_step = 4
