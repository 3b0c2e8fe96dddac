"""False verdicts found by outside recipes (issue 21, section 4), each pinned: a recipe whose training steps draw no
random numbers passes test_rng_state with a note when its unused random state is not restored (the same recipe with
dropout fails); a StatefulDataLoader data module that resumes exactly and keeps no consumed-samples count is not
failed for the shape of its state; an EMA callback that keeps no checkpoint state fails the exact gate, naming the
callback, and the per-step callback stream follows; one that checkpoints its weights but not its warm-up count
passes the gate and fails the stream (the same EMA with state_dict() and load_state_dict() passes every check); manual optimization with two
optimizers on a ResumableDataModule resumes at the next sample, and a count of optimizer steps instead of batches
fails test_consumed_samples as the root cause; randomness drawn as batches are fetched is named as such, not as a
lost data position. tests/test_false_verdicts_ground_truth.py shows each verdict true without the kit."""

from __future__ import annotations

import unittest

from conformance.report import run_classes
from reference_models.certify import LIGHTNING_RESUMES_ONE_BATCH_EARLY
from tests import false_verdict_subjects as subjects

_OLD_LIGHTNING = "Lightning < 2.5 resumes one micro-batch early: these exact recipes do not resume exactly there"


class TestRNGVerdicts(unittest.TestCase):
    @unittest.skipIf(LIGHTNING_RESUMES_ONE_BATCH_EARLY, _OLD_LIGHTNING)
    def test_an_unused_random_state_is_a_note_not_a_failure(self) -> None:
        report = run_classes([subjects.NoRandomness])
        outcome = report.outcome("NoRandomness", "test_rng_state")
        self.assertEqual(outcome.status, "passed", outcome.message)
        self.assertIn("not restored from optimizer step 4, unused today: no training step of the reference run "
                      "drew random numbers", outcome.summary)
        self.assertTrue(report.ok, report.format_text())

    def test_a_used_random_state_that_is_not_restored_fails(self) -> None:
        report = run_classes([subjects.DropoutWithoutRNGRestore], checks=["test_rng_state"])
        outcome = report.outcome("DropoutWithoutRNGRestore", "test_rng_state")
        self.assertEqual(outcome.status, "failed")
        self.assertIn("first divergence at optimizer step 4, micro-batch 0 (after the resume)", outcome.message)


@unittest.skipIf(LIGHTNING_RESUMES_ONE_BATCH_EARLY, _OLD_LIGHTNING)
class TestStateShapeVerdicts(unittest.TestCase):
    def test_a_stateful_loader_data_module_without_a_count_passes_with_the_counts_not_applicable(self) -> None:
        report = run_classes([subjects.StatefulLoaderDataModule])
        self.assertTrue(report.ok, report.format_text())
        for check in ("test_consumed_samples", "test_initial_consumed_samples"):
            outcome = report.outcome("StatefulLoaderDataModule", check)
            self.assertEqual(outcome.status, "not applicable", outcome.message)
            self.assertIn("keeps no consumed-samples count in its state_dict()", outcome.message)
        self.assertEqual(report.outcome("StatefulLoaderDataModule", "test_train_inputs").status, "passed")

    def test_a_count_derived_by_the_hook_is_checked_and_not_demanded_in_the_data_modules_state(self) -> None:
        report = run_classes([subjects.StatefulLoaderCountedByHook])
        self.assertTrue(report.ok, report.format_text())
        for check in ("test_consumed_samples", "test_initial_consumed_samples", "test_checkpoint_contents"):
            self.assertEqual(report.outcome("StatefulLoaderCountedByHook", check).status, "passed")


@unittest.skipIf(LIGHTNING_RESUMES_ONE_BATCH_EARLY, _OLD_LIGHTNING)
class TestCallbackStateVerdicts(unittest.TestCase):
    def test_an_ema_callback_without_checkpoint_state_fails_the_exact_gate_and_its_own_stream(self) -> None:
        report = run_classes([subjects.EMAWithoutCheckpointState])
        failed = {outcome.check for outcome in report.outcomes if outcome.status == "failed"}
        self.assertEqual(failed, {"test_restored_state", "test_callback_state"}, report.format_text())
        self.assertIn("a consequence of the root cause: test_restored_state fails",
                      report.outcome("EMAWithoutCheckpointState", "test_callback_state").message)
        message = report.outcome("EMAWithoutCheckpointState", "test_restored_state").message
        self.assertIn("callback EMAOfWeights: `shadow.transformer.", message)
        self.assertIn("give the callback state_dict() and load_state_dict()", message)

    def test_the_same_ema_with_checkpoint_state_passes(self) -> None:
        report = run_classes([subjects.EMAWithCheckpointState])
        self.assertTrue(report.ok, report.format_text())
        self.assertIn("callback CheckpointedEMA restored bit-exact",
                      report.outcome("EMAWithCheckpointState", "test_restored_state").summary)
        self.assertEqual(report.outcome("EMAWithCheckpointState", "test_callback_state").status, "passed")

    def test_an_ema_checkpointing_its_warm_up_count_passes_the_per_step_comparison(self) -> None:
        report = run_classes([subjects.WarmupEMAWithCheckpointState])
        self.assertTrue(report.ok, report.format_text())
        self.assertIn("3 records compared", report.outcome("WarmupEMAWithCheckpointState", "test_callback_state").summary)

    def test_callback_state_is_not_applicable_when_no_callback_holds_tensors(self) -> None:
        outcome = run_classes([subjects.NoRandomness], checks=["test_callback_state"]).outcomes[0]
        self.assertEqual(outcome.status, "not applicable")
        self.assertIn("no callback of the recipe holds tensors", outcome.message)


@unittest.skipIf(LIGHTNING_RESUMES_ONE_BATCH_EARLY, _OLD_LIGHTNING)
class TestConsumedSamplesVerdicts(unittest.TestCase):
    def test_two_manual_optimizers_on_a_resumable_data_module_pass(self) -> None:
        report = run_classes([subjects.ManualTwoOptimizers])
        self.assertTrue(report.ok, report.format_text())
        outcome = report.outcome("ManualTwoOptimizers", "test_consumed_samples")
        self.assertIn("the reference run's count is the samples it trained on", outcome.summary)

    def test_a_count_of_optimizer_steps_fails_the_count_check_as_the_root_cause(self) -> None:
        report = run_classes([subjects.ManualTwoOptimizersCountingSteps])
        outcome = report.outcome("ManualTwoOptimizersCountingSteps", "test_consumed_samples")
        self.assertEqual(outcome.status, "failed")
        self.assertIn("after optimizer step 2 the data reports 8 consumed samples, but the run had trained on 4 "
                      "samples by then", outcome.message)
        self.assertIn("root cause: this is the earliest divergence of all streams; test_consumed_samples fails",
                      outcome.message)
        inputs = report.outcome("ManualTwoOptimizersCountingSteps", "test_train_inputs")
        self.assertEqual(inputs.status, "failed")
        self.assertIn("a consequence of the root cause: test_consumed_samples", inputs.message)
        self.assertNotIn("conformance.ResumableDataModule does", inputs.message)


@unittest.skipIf(LIGHTNING_RESUMES_ONE_BATCH_EARLY, _OLD_LIGHTNING)
class TestFetchTimeRandomnessVerdicts(unittest.TestCase):
    def test_randomness_drawn_as_batches_are_fetched_is_named_as_such_not_as_the_data_position(self) -> None:
        report = run_classes([subjects.FetchTimeAugmentation])
        outcome = report.outcome("FetchTimeAugmentation", "test_train_inputs")
        self.assertEqual(outcome.status, "failed")
        self.assertIn("root cause: this is the earliest divergence of all streams; test_train_inputs first diverges "
                      "at optimizer step 4, micro-batch 0 (after the resume): the batch holds the samples the "
                      "reference run trained on there (the same sample ids) with other values", outcome.message)
        self.assertIn("derive that randomness from (seed, sample index)", outcome.message)
        self.assertNotIn("the data position is not restored", outcome.message)
        self.assertEqual(report.outcome("FetchTimeAugmentation", "test_rng_state").status, "passed")

    def test_the_same_noise_seeded_by_sample_passes(self) -> None:
        report = run_classes([subjects.SampleSeededAugmentation])
        self.assertTrue(report.ok, report.format_text())

    def test_a_batch_of_other_samples_is_still_blamed_on_the_data_position(self) -> None:
        report = run_classes([subjects.ManualTwoOptimizersCountingSteps], checks=["test_train_inputs"])
        self.assertNotIn("the same sample ids", report.outcomes[0].message)


@unittest.skipIf(LIGHTNING_RESUMES_ONE_BATCH_EARLY, _OLD_LIGHTNING)
class TestElasticVerdicts(unittest.TestCase):
    def test_an_elastic_failure_with_per_rank_dropout_names_the_per_rank_randomness(self) -> None:
        outcome = run_classes([subjects.ElasticWithPerRankDropout], checks=["test_elastic_resume"]).outcomes[0]
        self.assertEqual(outcome.status, "failed")
        self.assertIn("2 -> 1 ranks: optimizer step 4 has mean loss", outcome.message)
        self.assertIn("2 -> 1 ranks: the steps trained on the same samples but reached other losses, and the "
                      "recipe's training steps draw random numbers", outcome.message)


if __name__ == "__main__":
    unittest.main()
