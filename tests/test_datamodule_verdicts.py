"""Data-module verdicts found wrong by outside data modules, each pinned (the conformance classes live in
tests/outside_datamodules.py, reached through the module so that unittest does not collect them here)."""

from __future__ import annotations

import re
import unittest
from typing import Any

from conformance.report import run_classes
from reference_models.certify import LIGHTNING_RESUMES_ONE_BATCH_EARLY
from reference_models.mutants import datamodule as mutants
from tests import outside_datamodules as outside


def outcome(cls: type, check: str) -> Any:
    return run_classes([cls], checks=[check]).outcome(cls.__qualname__, check)


@unittest.skipIf(LIGHTNING_RESUMES_ONE_BATCH_EARLY, "Lightning < 2.5 resumes one micro-batch early")
class TestElasticResume(unittest.TestCase):
    def test_an_unrelated_crash_is_not_a_refusal(self) -> None:
        result = outcome(outside.Unrelated, "test_elastic_resume")
        self.assertEqual(result.status, "failed")
        self.assertIn("RuntimeError: the shard server is down", result.message)
        self.assertIn("in train_dataloader", result.message, "the rank's traceback is shown, not just its first line")
        self.assertIn("a refusal of a different world size is conformance.ElasticResumeRefused, or an error raised "
                      "through the data module's own load_state_dict before any resumed batch", result.message)

    def test_a_refusal_without_the_declaration_asks_for_it(self) -> None:
        result = outcome(outside.Undeclared, "test_elastic_resume")
        self.assertEqual(result.status, "failed")
        self.assertIn("does not declare supports_elastic_resume = False", result.message)

    def test_the_declared_refusal_passes(self) -> None:
        self.assertEqual(outcome(outside.Refusing, "test_elastic_resume").status, "passed")

    def test_a_declared_refusal_with_the_data_modules_own_exception_passes_and_is_shown(self) -> None:
        result = outcome(outside.OwnRefusing, "test_elastic_resume")
        self.assertEqual(result.status, "passed", result.message)
        self.assertIn("elastic resume refused, as declared (2 -> 1 ranks: RuntimeError: checkpoint of 2 "
                      "data-parallel ranks cannot resume on 1", result.summary)

    def test_a_resumable_data_module_resumes_on_another_world_size(self) -> None:
        result = outcome(outside.Correct, "test_elastic_resume")
        self.assertEqual(result.status, "passed")
        self.assertIn("2 -> 1 and 1 -> 2 ranks keep the global stream", result.summary)


@unittest.skipIf(LIGHTNING_RESUMES_ONE_BATCH_EARLY, "Lightning < 2.5 resumes one micro-batch early")
class TestMessages(unittest.TestCase):
    def test_repeated_samples_are_not_also_called_foreign(self) -> None:
        result = outcome(mutants.Mutant_consumed_off_by_one_batch, "test_no_sample_repeated_or_skipped")
        self.assertIn("repeated samples", result.message)
        listed: dict[tuple[str, str], set[str]] = {}
        for where, label, ids in re.findall(r"- (.*?): (repeated|foreign) samples \[([^\]]*)\]", result.message):
            listed.setdefault((where, label), set()).update(ids.split(", "))
        for (where, label), ids in listed.items():
            if label == "foreign":
                self.assertFalse(ids & listed.get((where, "repeated"), set()), f"{where}: repeated ids called foreign")

    def test_a_late_loader_is_blamed_only_on_evidence(self) -> None:
        result = outcome(mutants.Mutant_consumed_off_by_one_batch, "test_state_restored_before_first_batch")
        self.assertEqual(result.status, "failed")
        self.assertIn("the first resumed step drew", result.message)
        self.assertNotIn("applied after the loader was built", result.message)

    def test_repeated_resumes_reach_the_second_epoch(self) -> None:
        report = run_classes([outside.Correct], checks=["test_repeated_resumes"])
        self.assertEqual(report.outcome("Correct", "test_repeated_resumes").status, "passed")
        self.assertIn("the last in epoch 2", report.outcome("Correct", "test_repeated_resumes").summary)

    def test_workers_check_the_consumed_samples_of_the_checkpoint(self) -> None:
        result = outcome(outside.DrawCounting, "test_num_workers")
        self.assertIn("num_workers=2: the checkpoint of step 2 holds consumed_samples=0, expected 2 x 8 = 16",
                      result.message)
        self.assertNotIn("num_workers=0: the checkpoint", result.message)


if __name__ == "__main__":
    unittest.main()
