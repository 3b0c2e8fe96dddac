"""Class set-up of the mixins: hook and setting validation, expected failures, and never adding tests on import."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

import conformance
from conformance import (
    ConformanceSetupError,
    DataModuleResumeConformance,
    PredictionWriterConformance,
    ResumableDataModule,
    RNGStateCallback,
    StopAndGoConformance,
)
from conformance.report import run_classes
from reference_models import certify
from reference_models.data import SyntheticDataModule, SyntheticTokens
from reference_models.gpt import TinyGPT
from reference_models.recipes import GPTRecipe, PredictionRecipe
from tests.toy_suite import adopter


class TestSettingsValidation(unittest.TestCase):
    def assertSetupError(self, cls: type, *phrases: str) -> None:
        with self.assertRaises(ConformanceSetupError) as caught:
            cls.validate_settings()
        message = str(caught.exception)
        for phrase in (cls.__qualname__, *phrases):
            self.assertIn(phrase, message)

    def test_missing_hooks_are_named(self) -> None:
        self.assertSetupError(adopter(StopAndGoConformance), "hook 'make_model' is missing",
                              "hook 'make_datamodule' is missing", "@classmethod")

    def test_hook_must_be_a_classmethod(self) -> None:
        cls = adopter(StopAndGoConformance, make_model=lambda self: None,
                      make_datamodule=classmethod(lambda cls: None))
        self.assertSetupError(cls, "hook 'make_model' must be a @classmethod")

    def test_unknown_expected_failure_is_rejected_with_the_known_names(self) -> None:
        cls = type("Typo", (GPTRecipe, StopAndGoConformance, unittest.TestCase),
                   {"expected_failures": {"test_valid_output": "typo"}})
        self.assertSetupError(cls, "unknown check 'test_valid_output'", "test_valid_outputs")

    def test_expected_failure_needs_a_reason(self) -> None:
        cls = type("NoReason", (GPTRecipe, StopAndGoConformance, unittest.TestCase),
                   {"expected_failures": {"test_rng_state": " "}})
        self.assertSetupError(cls, "expected_failures['test_rng_state'] needs a non-empty reason")

    def test_inconsistent_steps(self) -> None:
        for settings, phrase in [
            ({"num_steps": 4, "stop_step": 4}, "1 <= stop_step < num_steps = 4"),
            ({"num_steps": 4, "stop_step": 0}, "1 <= stop_step < num_steps = 4"),
            ({"num_steps": 1}, "num_steps must be an int >= 2"),
            ({"interruption": "sigterm"}, "interruption must be None, 'clean', 'crash' or 'kill'"),
            ({"interruption": "kill", "resume_in_fresh_process": False}, "needs resume_in_fresh_process = True"),
            ({"trainer_kwargs": classmethod(lambda cls: {"devices": "auto", "accelerator": "gpu"})},
             "sets devices='auto'; conformance runs need to know how many rank processes to launch"),
            ({"trainer_kwargs": classmethod(lambda cls: {"devices": 2, "num_nodes": 2})},
             "sets num_nodes=2; conformance runs launch every rank on this machine"),
            ({}, ("Bad: its runs start fresh processes that import tests.test_suite_setup.Bad, but it cannot be "
                  "imported by that name")),
            ({"trainer_kwargs": classmethod(lambda cls: {"max_steps": 3})}, "trainer_kwargs() sets ['max_steps']"),
        ]:
            with self.subTest(settings=settings):
                cls = type("Bad", (GPTRecipe, StopAndGoConformance, unittest.TestCase), dict(settings))
                self.assertSetupError(cls, phrase)

    def test_model_parallel_size_must_be_a_positive_int(self) -> None:
        for size in (0, 2.0, "2", True):
            with self.subTest(size=size):
                cls = type("BadReplica", (PredictionRecipe, PredictionWriterConformance, unittest.TestCase),
                           {"model_parallel_size": size})
                self.assertSetupError(cls, "model_parallel_size must be a positive int", repr(size))

    def test_a_multi_rank_recipe_must_leave_data_parallel_sampling_to_its_resumable_data_module(self) -> None:
        cls = type("NoSamplerSetting", (GPTRecipe, StopAndGoConformance, unittest.TestCase), {
            "trainer_kwargs": classmethod(lambda cls: {"devices": 2, "strategy": "ddp"})})
        with self.assertRaisesRegex(ConformanceSetupError, r"SyntheticDataModule is a ResumableDataModule, which gives "
                                                           r"every data-parallel rank its slice .* use_distributed_sampler=False"):
            cls.validate_recipe()

    def test_the_data_module_suite_runs_its_probe_under_its_own_strategy(self) -> None:
        cls = type("OwnStrategy", (DataModuleResumeConformance, unittest.TestCase), {
            "make_datamodule": classmethod(lambda cls: SyntheticDataModule()),
            "trainer_kwargs": classmethod(lambda cls: {"strategy": "ddp"})})
        self.assertSetupError(cls, "trainer_kwargs() sets strategy='ddp'", "only NeMo's MegatronStrategy may be given")

    def test_tolerances_are_validated(self) -> None:
        for tolerances, phrase in [
            ({"test_train_los": {"atol": 1}}, "unknown check 'test_train_los'"),
            ({"test_train_loss": {"absolute": 1}}, "must be a dict with keys among"),
            ({"test_train_loss": {"atol": -1}}, "['atol'] must be a non-negative number"),
            ({"test_train_loss": {"paths": {"*": 3}}}, "must map glob strings to (atol, rtol) pairs"),
        ]:
            with self.subTest(tolerances=tolerances):
                cls = type("Bad", (GPTRecipe, StopAndGoConformance, unittest.TestCase), {"tolerances": tolerances})
                self.assertSetupError(cls, phrase)

    def test_setup_error_fails_every_check_of_the_class_loudly(self) -> None:
        report = run_classes([adopter(StopAndGoConformance, "Unfinished")])
        self.assertFalse(report.ok)
        [outcome] = report.outcomes
        self.assertEqual(outcome.status, "error")
        self.assertIn("hook 'make_model' is missing", outcome.message)

    def test_valid_settings_pass(self) -> None:
        type("Fine", (GPTRecipe, StopAndGoConformance, unittest.TestCase),
             {"resume_in_fresh_process": False}).validate_settings()
        certify.TestTinyGPTDDPStopAndGo.validate_settings()  # module level: its fresh processes can import it
        certify.TestTinyGPTDDPStopAndGo.validate_recipe()

    def test_per_check_tolerances_reach_the_comparator(self) -> None:
        cls = type("Tolerant", (GPTRecipe, StopAndGoConformance, unittest.TestCase),
                   {"atol": 1e-3, "tolerances": {"test_train_loss": {"rtol": 0.1, "paths": {"*exp_avg*": (1, 2)}}}})
        options = cls.comparison_options("test_train_loss")
        self.assertEqual((options["atol"], options["rtol"]), (1e-3, 0.1))
        self.assertEqual(options["path_tolerances"]["*exp_avg*"], conformance.Tolerance(1, 2))
        self.assertEqual(cls.comparison_options("test_rng_state"), {"atol": 1e-3, "rtol": 0.0})
        plain = type("Plain", (GPTRecipe, StopAndGoConformance, unittest.TestCase), {})
        self.assertEqual(plain.comparison_options("test_optimizer_state"), {"atol": 0.0, "rtol": 0.0},
                         "the strict profile is the default: bit-exact")
        self.assertEqual(cls.comparison_options("test_optimizer_state")["atol"], 1e-3, "the adopter's value wins")

    def test_a_tolerance_profile_loosens_computed_checks_only_with_its_own_first_step_envelope(self) -> None:
        cls = type("OnGPU", (GPTRecipe, StopAndGoConformance, unittest.TestCase), {"tolerance_profile": "gpu_fp32"})
        profile = conformance.TOLERANCE_PROFILES["gpu_fp32"]
        self.assertEqual(cls.comparison_options("test_train_loss"), {"atol": profile.atol, "rtol": profile.rtol})
        self.assertEqual(cls.comparison_options("test_train_loss", first_step=True),
                         {"atol": profile.first_step_atol, "rtol": profile.first_step_rtol})
        self.assertLess(profile.first_step_rtol, profile.rtol)
        for exact in ("test_rng_state", "test_train_inputs", "test_learning_rate", "test_lr_scheduler_state",
                      "test_global_step", "test_consumed_samples"):
            self.assertEqual(cls.comparison_options(exact), {"atol": 0.0, "rtol": 0.0}, exact)
        self.assertEqual(cls.comparison_options("test_elastic_resume"), {"atol": 1e-5, "rtol": 1e-4},
                         "no profile applies to an elastic resume")
        overridden = type("Overridden", (cls,), {"tolerances": {"test_train_loss": {"rtol": 0.5}}})
        self.assertEqual(overridden.comparison_options("test_train_loss", first_step=True)["rtol"], 0.5)

    def test_an_unknown_tolerance_profile_is_a_setup_error_naming_the_profiles(self) -> None:
        cls = type("Typo", (GPTRecipe, StopAndGoConformance, unittest.TestCase),
                   {"tolerance_profile": "gpu", "deterministic_mode": "yes", "resume_in_fresh_process": False})
        with self.assertRaises(conformance.ConformanceSetupError) as caught:
            cls.validate_settings()
        self.assertIn("tolerance_profile must be one of 'strict', 'gpu_fp32', 'gpu_bf16', got 'gpu'",
                      str(caught.exception))
        self.assertIn("deterministic_mode must be True or False, got 'yes'", str(caught.exception))


class NoBatchSizes(ResumableDataModule, pl.LightningDataModule):
    """A ResumableDataModule whose author forgot the batch sizes."""

    def train_dataloader(self) -> DataLoader:
        return self.resumable_train_dataloader(SyntheticTokens(8, 4, 16, 0))


class TestRecipeMistakesAreOneSetupError(unittest.TestCase):
    """Each mistake ends in one ConformanceSetupError at class set-up, naming the hook and the fix."""

    def assertOneSetupError(self, cls: type, *phrases: str) -> None:
        report = run_classes([cls])
        self.assertEqual([outcome.status for outcome in report.outcomes], ["error"], report.format_text())
        message = report.outcomes[0].message
        for phrase in ("ConformanceSetupError", *phrases):
            self.assertIn(phrase, message)

    def recipe(self, base: type = GPTRecipe, suite: type = StopAndGoConformance, **hooks: object) -> type:
        wrapped = {name: classmethod(hook) for name, hook in hooks.items()}
        return type("Mistaken", (base, suite, unittest.TestCase), {**wrapped, "resume_in_fresh_process": False})

    def test_mixin_listed_after_test_case(self) -> None:
        with self.assertRaisesRegex(ConformanceSetupError, r"class Late\(TestCase, GPTRecipe, StopAndGoConformance\) "
                                                           r"lists unittest.TestCase before StopAndGoConformance.*e.g. "
                                                           r"class Late\(StopAndGoConformance, unittest.TestCase\)"):
            type("Late", (unittest.TestCase, GPTRecipe, StopAndGoConformance), {})

    def test_callbacks_not_in_a_list(self) -> None:
        self.assertOneSetupError(self.recipe(make_callbacks=lambda cls: RNGStateCallback()),
                                 "make_callbacks() returned a RNGStateCallback, not a list: return [RNGStateCallback(...)]")

    def test_shared_callback_objects(self) -> None:
        shared = RNGStateCallback()
        self.assertOneSetupError(self.recipe(make_callbacks=lambda cls: [shared]),
                                 "make_callbacks() returned the same RNGStateCallback object on two calls")

    def test_a_dataloader_instead_of_a_datamodule(self) -> None:
        self.assertOneSetupError(self.recipe(make_datamodule=lambda cls: SyntheticDataModule().val_dataloader(),
                                             trainer_kwargs=lambda cls: {}),
                                 "make_datamodule() returned a DataLoader, not a LightningDataModule")

    def test_a_plain_module_instead_of_a_lightning_module(self) -> None:
        self.assertOneSetupError(self.recipe(make_model=lambda cls: TinyGPT().transformer),
                                 "make_model() returned a torch.nn.Module (Transformer), not a LightningModule")

    def test_the_same_object_on_every_call(self) -> None:
        model = TinyGPT()
        self.assertOneSetupError(self.recipe(make_model=lambda cls: model),
                                 "make_model() returned the same TinyGPT object twice: build a new one on every call")

    @unittest.skipIf(torch.backends.mps.is_available(), "this machine has the accelerator the test asks for")
    def test_an_accelerator_this_machine_lacks(self) -> None:
        self.assertOneSetupError(self.recipe(trainer_kwargs=lambda cls: {**GPTRecipe.trainer_kwargs(),
                                                                          "accelerator": "mps"}),
                                 "accelerator='mps', which is not available on this machine")

    def test_resumable_datamodule_without_batch_sizes(self) -> None:
        self.assertOneSetupError(self.recipe(make_datamodule=lambda cls: NoBatchSizes(), trainer_kwargs=lambda cls: {}),
                                 "NoBatchSizes has no positive int micro_batch_size or global_batch_size")
        with self.assertRaisesRegex(ValueError, "NoBatchSizes is a ResumableDataModule without micro_batch_size or "
                                                "global_batch_size: set"):
            NoBatchSizes().train_dataloader()

    def test_global_batch_that_two_ranks_cannot_split(self) -> None:
        cls = type("Indivisible", (DataModuleResumeConformance, unittest.TestCase), {
            "make_datamodule": classmethod(lambda cls: SyntheticDataModule(micro_batch_size=4, global_batch_size=4))})
        self.assertOneSetupError(cls, "global_batch_size 4 is not a multiple of micro_batch_size 4 x 2 data-parallel ranks = 8 "
                                      "(the data-parallel checks run on 2 ranks)")

    def test_a_writer_that_is_not_a_callback(self) -> None:
        cls = type("NotAWriter", (PredictionRecipe, PredictionWriterConformance, unittest.TestCase), {
            "make_writer": classmethod(lambda cls, output_dir: str(output_dir))})
        self.assertOneSetupError(cls, "make_writer(output_dir) returned a str, not a Callback")


class TestNothingIsCollectedFromTheKit(unittest.TestCase):
    def test_mixins_are_not_test_cases(self) -> None:
        for name in conformance.__all__:
            value = getattr(conformance, name)
            if isinstance(value, type):
                with self.subTest(name=name):
                    self.assertFalse(issubclass(value, unittest.TestCase))
                    self.assertFalse(name.startswith("Test"))
        self.assertEqual(unittest.TestLoader().loadTestsFromModule(conformance).countTestCases(), 0)

    def test_pytest_collects_only_the_adopters_checks(self) -> None:
        module = textwrap.dedent("""
            import unittest
            from conformance import StopAndGoConformance
            from conformance.suites._base import ConformanceSuite

            class Toy(ConformanceSuite, suite=True):
                required_hooks = ()
                def test_one(self):
                    pass

            class TestAdopter(Toy, unittest.TestCase):
                pass
        """)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "test_adopter.py"
            path.write_text(module)
            collected = subprocess.run(
                [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", str(path)],
                capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], check=False,
            )
        self.assertEqual(collected.returncode, 0, collected.stdout + collected.stderr)
        node_ids = [line for line in collected.stdout.splitlines() if "::" in line]
        self.assertEqual([node.split("::", 1)[1] for node in node_ids], ["TestAdopter::test_one"])


if __name__ == "__main__":
    unittest.main()
