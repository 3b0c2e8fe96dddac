"""Stop-and-go verdicts found wrong by outside recipes, each pinned: no false failure, no pass from nothing."""

from __future__ import annotations

import tempfile
import unittest
import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch

from conformance import StopAndGoConformance
from conformance.report import run_classes
from conformance.runs.backend import RunOutcome
from conformance.training.recordstore import RecordStore
from reference_models.data import SyntheticDataModule
from reference_models.gpt import TinyGPT
from reference_models.mutants.stop_and_go import STOP_AND_GO_MUTANTS
from reference_models.recipes import GPTRecipe

VALIDATION_CHECKS = ("test_valid_inputs", "test_valid_outputs", "test_valid_loss")


class LongEpochRecipe(GPTRecipe):
    """One micro-batch per step, 50 steps per epoch, and no validation schedule of its own."""

    datamodule_kwargs: ClassVar[dict[str, int]] = {"num_train": 400, "global_batch_size": 4}

    @classmethod
    def trainer_kwargs(cls) -> dict[str, Any]:
        return {"limit_val_batches": 2}


def conformance_class(recipe: type, name: str, **attributes: Any) -> type[unittest.TestCase]:
    """A conformance class made in a test, so not importable by fresh processes: its runs stay in this process."""
    return type(name, (recipe, StopAndGoConformance, unittest.TestCase),
                {"__qualname__": name, "resume_in_fresh_process": False, **attributes})


class TestValidationSchedule(unittest.TestCase):
    def test_a_recipe_validating_once_per_epoch_is_validated_every_two_steps(self) -> None:
        report = run_classes([conformance_class(LongEpochRecipe, "PerEpoch")])
        self.assertTrue(report.ok, report.format_text())
        self.assertEqual({check: report.statuses()[check] for check in VALIDATION_CHECKS},
                         dict.fromkeys(VALIDATION_CHECKS, "passed"))

    def test_the_recipes_own_schedule_holds_and_nothing_to_compare_fails(self) -> None:
        own = conformance_class(LongEpochRecipe, "OwnSchedule", trainer_kwargs=classmethod(
            lambda cls: {"limit_val_batches": 2, "check_val_every_n_epoch": 1}))
        without = conformance_class(LongEpochRecipe, "NoValidation", make_datamodule=classmethod(
            lambda cls: type("NoVal", (SyntheticDataModule,), {"val_dataloader": None})(**cls.datamodule_kwargs)))
        for cls in (own, without):
            with self.subTest(cls=cls.__qualname__):
                report = run_classes([cls], checks=VALIDATION_CHECKS)
                for check in VALIDATION_CHECKS:
                    outcome = report.outcome(cls.__qualname__, check)
                    self.assertEqual(outcome.status, "failed")
                    self.assertIn("nothing to compare after the resume point", outcome.message)


class TestValidationAtTheStopStep(unittest.TestCase):
    """Found by an outside NeMo recipe: a clean stop between two validations failed every validation check."""

    def test_the_validation_a_clean_stop_adds_is_no_divergence(self) -> None:
        cls = conformance_class(LongEpochRecipe, "CleanStopOffSchedule", interruption="clean", num_steps=6,
                                stop_step=3)
        report = run_classes([cls])
        self.assertTrue(report.ok, report.format_text())

    def test_only_the_interrupted_runs_validation_at_the_stop_step_is_excused(self) -> None:
        cls = conformance_class(LongEpochRecipe, "Excuses", num_steps=6, stop_step=4)
        with tempfile.TemporaryDirectory() as folder:
            interrupted, resumed = RecordStore(Path(folder) / "i"), RecordStore(Path(folder) / "r")
            resumed.write("valid_loss", (4, 0, 0, 0), torch.tensor(1.0))
            resumed.close()
            lost, extra = cls._stop_step_validation(cls, "valid_loss", interrupted)
            self.assertTrue(lost((4, 0, 0, 1)), "Lightning 2.4 replays the stop step's validation in part")
            self.assertFalse(lost((2, 0, 0, 0)))
            self.assertFalse(extra((4, 0, 0, 0)), "only a clean stop adds a validation")
            clean = conformance_class(LongEpochRecipe, "CleanExcuses", num_steps=6, stop_step=4, interruption="clean")
            interrupted.write("valid_loss", (4, 1, 0, 0), torch.tensor(1.0))
            interrupted.close()
            _, extra = clean._stop_step_validation(clean, "valid_loss", interrupted)
            self.assertTrue(extra((4, 1, 0, 0)))
            self.assertFalse(extra((4, 0, 0, 0)), "the resumed run's records are never excused")


class NoOptimizerGPT(TinyGPT):
    def configure_optimizers(self) -> None:
        return None


class TestNothingComparedFailsClosed(unittest.TestCase):
    def test_a_recipe_without_an_optimizer_fails_the_learning_rate_check(self) -> None:
        cls = conformance_class(type("NoOptimizer", (LongEpochRecipe,), {"model_class": NoOptimizerGPT}), "NoOpt")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`LightningModule.configure_optimizers` returned `None`")
            outcome = run_classes([cls], checks=["test_learning_rate"]).outcome("NoOpt", "test_learning_rate")
        self.assertEqual(outcome.status, "failed")
        self.assertIn("configure_optimizers() returned no optimizer", outcome.message)

    def test_every_check_fails_on_records_without_content(self) -> None:
        report = run_classes([conformance_class(GPTRecipe, "EmptyRecords", prepare=classmethod(_empty_runs))])
        statuses = report.statuses()
        self.assertEqual(set(statuses), set(StopAndGoConformance.check_names()))
        # a data module reporting no consumed-samples count is not failed for the shape of its state, nor a recipe
        # whose callbacks hold no tensors: n/a, with why
        self.assertEqual({check: status for check, status in statuses.items() if status != "failed"},
                         {"test_elastic_resume": "skipped", "test_consumed_samples": "not applicable",
                          "test_initial_consumed_samples": "not applicable", "test_callback_state": "not applicable"},
                         report.format_text())
        self.assertIn("keeps no consumed-samples count", report.outcome("EmptyRecords", "test_consumed_samples").message)


class TestRootCause(unittest.TestCase):
    def run_mutant(self, name: str) -> Any:
        mutant = next(mutant for mutant in STOP_AND_GO_MUTANTS if mutant.name == name)
        return run_classes([mutant.conformance_class]), mutant.conformance_class.__qualname__

    def test_rng_not_restored_is_named_first_with_its_remedy(self) -> None:
        report, suite = self.run_mutant("rng_not_restored")
        text = report.format_text()
        root_line = text.index("root cause: test_rng_state first diverges at optimizer step 5, micro-batch 0 "
                               "(after the resume): the random state is not restored: add "
                               "conformance.RNGStateCallback() to make_callbacks()")
        self.assertLess(root_line, text.index("FAIL"), "the root cause comes before the failures")
        self.assertIn("test_train_loss", text[root_line:text.index("\n", root_line)], "consequences are named")
        self.assertIn("root cause: this is the earliest divergence", report.outcome(suite, "test_rng_state").message)
        loss = report.outcome(suite, "test_train_loss").message
        self.assertIn("a consequence of the root cause: test_rng_state first diverges", loss.splitlines()[1])

    def test_a_data_position_not_restored_points_at_the_data_module(self) -> None:
        report, suite = self.run_mutant("datamodule_restarts_from_zero")
        self.assertIn("root cause: test_train_inputs first diverges at optimizer step 5, micro-batch 0 (after the "
                      "resume): the data position is not restored", report.format_text())
        self.assertIn("conformance.ResumableDataModule", report.outcome(suite, "test_consumed_samples").message)


def _empty_runs(cls: type) -> None:
    """A reference and a resumed 'run' whose every record exists where a real run's would, holding nothing."""
    empty_step = {"global_step": {}, "learning_rate": [[]], "consumed_samples": None,
                  "optimizer_state": [{"state": {}, "param_groups": []}], "lr_scheduler_state": []}
    empty_batch = {"rng_state": {}, "train_inputs": {}, "train_outputs": [], "train_loss": None}
    empty_validation = {"valid_inputs": {}, "valid_outputs": [], "valid_loss": None}
    runs = {}
    for name, first, last in (("reference", 1, cls.num_steps), ("resumed", cls.stop_step + 1, cls.num_steps)):
        store = RecordStore(cls._work_dir / name / "rank0")
        store.write("start", (first - 1,), {"global_step": first - 1, "consumed_samples": None,
                                            "datamodule_class": None})
        store.write("initial_weights", (first - 1,), {})
        for step in range(first, last + 1):
            for stream, value in empty_batch.items():
                store.write(stream, (step - 1, 0), value)
            for stream, value in empty_step.items():
                store.write(stream, (step,), value)
            for stream, value in empty_validation.items():
                store.write(stream, (step, 0, 0, 0), value)
        store.write("final_weights", (last,), {"weight": torch.zeros(0)})
        store.close()
        runs[name] = [RunOutcome(name, store, None, 0.0)]
    cls.reference, cls.interrupted, cls.resumed = runs["reference"], [], runs["resumed"]
    cls.elastic, cls._comparisons, cls._final_weights, cls._gates = {}, {}, None, None


if __name__ == "__main__":
    unittest.main()
