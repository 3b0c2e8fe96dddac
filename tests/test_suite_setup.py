"""Class set-up of the mixins: hook and setting validation, expected failures, and never adding tests on import."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

import conformance
from conformance import ConformanceSetupError, StopAndGoConformance
from conformance.report import run_classes
from reference_models.recipes import GPTRecipe
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
            ({"interruption": "sigterm"}, "interruption must be 'clean' or 'crash'"),
            ({"trainer_kwargs": classmethod(lambda cls: {"max_steps": 3})}, "trainer_kwargs() sets ['max_steps']"),
        ]:
            with self.subTest(settings=settings):
                cls = type("Bad", (GPTRecipe, StopAndGoConformance, unittest.TestCase), dict(settings))
                self.assertSetupError(cls, phrase)

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
        type("Fine", (GPTRecipe, StopAndGoConformance, unittest.TestCase), {}).validate_settings()

    def test_per_check_tolerances_reach_the_comparator(self) -> None:
        cls = type("Tolerant", (GPTRecipe, StopAndGoConformance, unittest.TestCase),
                   {"atol": 1e-3, "tolerances": {"test_train_loss": {"rtol": 0.1, "paths": {"*exp_avg*": (1, 2)}}}})
        options = cls.comparison_options("test_train_loss")
        self.assertEqual((options["atol"], options["rtol"]), (1e-3, 0.1))
        self.assertEqual(options["path_tolerances"]["*exp_avg*"], conformance.Tolerance(1, 2))
        self.assertEqual(cls.comparison_options("test_rng_state"), {"atol": 1e-3, "rtol": None})
        plain = type("Plain", (GPTRecipe, StopAndGoConformance, unittest.TestCase), {})
        self.assertEqual(plain.comparison_options("test_optimizer_state"), {"atol": 0.0, "rtol": None},
                         "optimizer state is compared relatively by default (tiny second moments)")
        self.assertEqual(cls.comparison_options("test_optimizer_state")["atol"], 1e-3, "the adopter's value wins")


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
