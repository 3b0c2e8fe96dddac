"""Stop-and-go runs in the kit's own rank processes: failures end the class quickly and readably, and the resume
in a fresh process finds what a resume in the same process hides."""

from __future__ import annotations

import tempfile
import time
import unittest

from conformance.report import run_classes
from conformance.runs.backend import FitPlan
from conformance.runs.lightning.fit import run_fits
from reference_models import certify
from reference_models.mutants.stop_and_go import STOP_AND_GO_MUTANTS
from tests import distributed_recipes


class TestFailingRanks(unittest.TestCase):
    def test_a_crashed_rank_fails_the_class_at_once_naming_the_rank(self) -> None:
        started = time.monotonic()
        report = run_classes([distributed_recipes.CrashingRank], checks=["test_runs_trained", "test_train_loss"])
        self.assertLess(time.monotonic() - started, 120, "the waiting peer is stopped, not left to gloo's timeout")
        message = report.outcome("CrashingRank", "test_runs_trained").message
        self.assertIn("the reference run failed on rank 1: RuntimeError: rank 1 ran out of memory (simulated)", message)
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
        # the continuous and the interrupted run each end at the deadline; no resume without a checkpoint
        self.assertLess(time.monotonic() - started, 2 * deadline + 30)
        message = report.outcome("HangingRank", "test_runs_trained").message
        self.assertRegex(message, r"the reference run failed on rank [01]")
        self.assertRegex(message, r"deadline of 20 s and was killed|timed out|Timeout|stopped by the kit")


class TestNoFalseFailureOnTwoRanks(unittest.TestCase):
    def test_a_weight_changed_on_one_rank_at_load_is_overwritten_by_ddp_and_passes(self) -> None:
        report = run_classes([distributed_recipes.WeightChangedOnRankOneAtLoad])
        self.assertTrue(report.ok, report.format_text())
        self.assertEqual(report.statuses()["test_final_weights"], "passed")


class TestRecordsOnTwoRanks(unittest.TestCase):
    def test_each_rank_records_the_forward_outputs_and_the_loss_training_step_returned(self) -> None:
        """Under DDP Lightning routes training_step through the module's __call__: the forward hook must not take
        the step's output for a forward output; and the loss is recorded undivided by the accumulation (2)."""
        recipe = certify.TestTinyGPTDDPStopAndGo
        with tempfile.TemporaryDirectory() as folder:
            [ranks] = run_fits(recipe, [FitPlan("run", folder, max_steps=2, seed=0)], in_process=False,
                               deadline_s=300)
            self.assertEqual([run.error for run in ranks], [None, None])
            for run in ranks:
                key = run.records.keys("train_outputs")[0]
                outputs = run.records.read("train_outputs", key)
                self.assertEqual([tuple(output.shape) for output in outputs], [(4, 15, 64)], f"rank {run.rank}")
                self.assertGreater(float(run.records.read("train_loss", key)), 3.5, "about ln(64), not half of it")


class TestFreshProcessResume(unittest.TestCase):
    def test_module_level_state_passes_when_resumed_in_the_same_process(self) -> None:
        """The blind spot the fresh-process resume closes: the same broken recipe, interrupted and resumed in one
        process, passes (the resumed run carries on the module-level state the interrupted run left)."""
        mutant = next(mutant for mutant in STOP_AND_GO_MUTANTS if mutant.name == "module_level_state")
        in_process = type("ModuleLevelStateInProcess", (mutant.conformance_class,),
                          {"resume_in_fresh_process": False, "interruption": "crash"})
        report = run_classes([in_process])
        self.assertTrue(report.ok, report.format_text())


if __name__ == "__main__":
    unittest.main()
