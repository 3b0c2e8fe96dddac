"""Stop-and-go runs in the kit's own rank processes: failures end the class quickly and readably, and the resume
in a fresh process finds what a resume in the same process hides."""

from __future__ import annotations

import time
import unittest

from conformance.report import run_classes
from reference_models.mutants.stop_and_go import STOP_AND_GO_MUTANTS
from tests import distributed_recipes


class TestFailingRanks(unittest.TestCase):
    def test_a_crashed_rank_fails_the_class_at_once_naming_the_rank(self) -> None:
        started = time.monotonic()
        report = run_classes([distributed_recipes.CrashingRank], checks=["test_runs_trained", "test_train_loss"])
        self.assertLess(time.monotonic() - started, 120, "the waiting peer is stopped, not left to gloo's timeout")
        message = report.outcome("CrashingRank", "test_runs_trained").message
        self.assertIn("the continuous run failed on rank 1: RuntimeError: rank 1 ran out of memory (simulated)", message)
        self.assertLess(message.index("failed on rank 1"), message.index("failed on rank 0"), "the first failure first")
        # rank 0 was waiting for rank 1 in the gradient all-reduce: either the kit stopped it, or it saw the
        # connection close first; either way its failure is named as coming after rank 1's
        self.assertRegex(message, r"failed on rank 0: (after rank 1 had failed: RuntimeError|rank 0 was stopped by the "
                                  r"kit because rank 1 failed first)")
        self.assertEqual(report.outcome("CrashingRank", "test_train_loss").status, "failed")

    def test_a_hung_rank_is_killed_at_the_deadline(self) -> None:
        started = time.monotonic()
        report = run_classes([distributed_recipes.HangingRank], checks=["test_runs_trained"])
        deadline = distributed_recipes.HangingRank.process_deadline_s
        # continuous and interrupted run at once, each within the deadline; no resume without a checkpoint
        self.assertLess(time.monotonic() - started, deadline + 60)
        message = report.outcome("HangingRank", "test_runs_trained").message
        self.assertRegex(message, r"the continuous run failed on rank [01]")
        self.assertRegex(message, r"deadline of 40 s and was killed|timed out|Timeout|stopped by the kit")


class TestFreshProcessResume(unittest.TestCase):
    def test_module_level_state_passes_when_resumed_in_the_same_process(self) -> None:
        """The blind spot the fresh-process resume closes: the same broken recipe resumed in-process passes."""
        mutant = next(mutant for mutant in STOP_AND_GO_MUTANTS if mutant.name == "module_level_state")
        in_process = type("ModuleLevelStateInProcess", (mutant.conformance_class,), {"resume_in_fresh_process": False})
        report = run_classes([in_process])
        self.assertTrue(report.ok, report.format_text())


if __name__ == "__main__":
    unittest.main()
