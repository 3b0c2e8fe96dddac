"""The reference recipe of the attached backend under StopAndGoConformance (collected by unittest and pytest as it
is, and certified by ``python -m conformance certify reference_models.certify_attached``)."""

from __future__ import annotations

import unittest

from conformance import StopAndGoConformance
from reference_models.attached_trainer import AttachedTrainerRecipe


class TestAttachedTrainerStopAndGo(AttachedTrainerRecipe, StopAndGoConformance, unittest.TestCase):
    """One rank; the trainer saves after step 4 and trains on (shared trajectory); resume to step 10 across an epoch
    end."""

    num_steps, stop_step = 10, 4


class TestAttachedTrainerCleanStop(AttachedTrainerRecipe, StopAndGoConformance, unittest.TestCase):
    """One rank; the interrupted run trains to step 5 (the first epoch's last batch) and ends normally."""

    num_steps, stop_step = 8, 5
    interruption = "clean"


class TestAttachedTrainerTwoRanksKilled(AttachedTrainerRecipe, StopAndGoConformance, unittest.TestCase):
    """Two DDP ranks over gloo joined by the trainer itself; every rank killed by SIGKILL after step 3's save."""

    num_steps, stop_step = 6, 3
    num_ranks, interruption = 2, "kill"
