"""test_rng_state judges the randomness training consumes (issue 21, section 4): a recipe whose training steps draw
no random numbers passes with a note when its unused random state is not restored; the same recipe with dropout
fails, and the root cause of its other failures is not blamed on an unused state."""

from __future__ import annotations

import unittest

from conformance.report import run_classes
from tests import rng_subjects as subjects


class TestRNGVerdicts(unittest.TestCase):
    def test_an_unused_random_state_is_a_note_not_a_failure(self) -> None:
        report = run_classes([subjects.NoRandomness])
        outcome = report.outcome("NoRandomness", "test_rng_state")
        self.assertEqual(outcome.status, "passed", outcome.message)
        self.assertIn("not restored from optimizer step 4, unused today: no training step of the uninterrupted run "
                      "drew random numbers", outcome.summary)
        self.assertTrue(report.ok, report.format_text())

    def test_a_used_random_state_that_is_not_restored_fails(self) -> None:
        report = run_classes([subjects.DropoutWithoutRNGRestore], checks=["test_rng_state"])
        outcome = report.outcome("DropoutWithoutRNGRestore", "test_rng_state")
        self.assertEqual(outcome.status, "failed")
        self.assertIn("first divergence at optimizer step 4, micro-batch 0 (after the resume)", outcome.message)


if __name__ == "__main__":
    unittest.main()
