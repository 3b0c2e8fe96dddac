"""False verdicts found by outside recipes (issue 21, section 4), each pinned: a recipe whose training steps draw no
random numbers passes test_rng_state with a note when its unused random state is not restored (the same recipe with
dropout fails); a StatefulDataLoader data module that resumes exactly and keeps no consumed-samples count is not
failed for the shape of its state; an EMA callback that keeps no checkpoint state fails the exact gate, naming the
callback (the same EMA with state_dict() and load_state_dict() passes every check)."""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

import lightning.pytorch as pl
import torch

from conformance.report import run_classes
from reference_models.certify import LIGHTNING_RESUMES_ONE_BATCH_EARLY
from reference_models.data import SyntheticDataModule
from reference_models.gpt import TinyGPT
from reference_models.transformer import TransformerConfig
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
    def test_an_ema_callback_without_checkpoint_state_fails_the_exact_gate_only(self) -> None:
        report = run_classes([subjects.EMAWithoutCheckpointState])
        failed = {outcome.check for outcome in report.outcomes if outcome.status == "failed"}
        self.assertEqual(failed, {"test_restored_state"}, report.format_text())
        message = report.outcome("EMAWithoutCheckpointState", "test_restored_state").message
        self.assertIn("callback EMAOfWeights: `shadow.transformer.", message)
        self.assertIn("give the callback state_dict() and load_state_dict()", message)

    def test_the_same_ema_with_checkpoint_state_passes(self) -> None:
        report = run_classes([subjects.EMAWithCheckpointState])
        self.assertTrue(report.ok, report.format_text())
        self.assertIn("callback CheckpointedEMA restored bit-exact",
                      report.outcome("EMAWithCheckpointState", "test_restored_state").summary)


def _exported_ema(ema: pl.Callback, max_steps: int, resume_from: Path | None = None,
                  save_to: Path | None = None) -> dict[str, torch.Tensor]:
    """Ground truth without the kit: fit the tiny GPT (no dropout) with ``ema`` in plain Lightning and return the
    EMA it exported."""
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(max_steps=max_steps, max_epochs=-1, callbacks=[ema], accumulate_grad_batches=2,
                         limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(TinyGPT(TransformerConfig(dropout=0.0)), datamodule=SyntheticDataModule(), ckpt_path=resume_from)
    if save_to is not None:
        trainer.save_checkpoint(save_to)
    return ema.exported


@unittest.skipIf(LIGHTNING_RESUMES_ONE_BATCH_EARLY, _OLD_LIGHTNING)
class TestCallbackStateGroundTruth(unittest.TestCase):
    """The EMA subjects' verdicts hold without the kit: interrupted after 3 of 6 steps and resumed in a fresh
    trainer, only the checkpointed EMA exports the uninterrupted run's EMA."""

    def exported_difference(self, ema_class: type[pl.Callback]) -> float:
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = Path(folder, "step3.ckpt")
            uninterrupted = _exported_ema(ema_class(), 6)
            _exported_ema(ema_class(), 3, save_to=checkpoint)
            resumed = _exported_ema(ema_class(), 6, resume_from=checkpoint)
        self.assertEqual(resumed.keys(), uninterrupted.keys())
        return max((resumed[name] - uninterrupted[name]).abs().max().item() for name in uninterrupted)

    def test_the_checkpointed_ema_resumes_exactly(self) -> None:
        self.assertEqual(self.exported_difference(subjects.CheckpointedEMA), 0.0)

    def test_the_ema_without_checkpoint_state_does_not(self) -> None:
        self.assertGreater(self.exported_difference(subjects.EMAOfWeights), 1e-4)


if __name__ == "__main__":
    unittest.main()
