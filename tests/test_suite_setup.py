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
from conformance.suites._base import ConformanceSuite
from reference_models.mutants import STOP_AND_GO_MUTANTS
from reference_models.recipes import GPTRecipe


class ToySuite(ConformanceSuite, suite=True):
    """A suite without training runs: one check that passes, one that fails, one that crashes."""

    required_hooks = ()

    def test_passes(self) -> None:
        pass

    def test_fails(self) -> None:
        raise AssertionError("the toy property does not hold")

    def test_crashes(self) -> None:
        raise RuntimeError("bug in the check itself")


def adopter(base: type, name: str = "Adopter", **attributes) -> type:
    """A test class as a model author would write it: ``class Adopter(base, unittest.TestCase)``."""
    return type(name, (base, unittest.TestCase), {"__module__": __name__, "__qualname__": name, **attributes})


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


class TestExpectedFailures(unittest.TestCase):
    def test_expected_failure_unexpected_success_and_crash(self) -> None:
        cls = adopter(ToySuite, expected_failures={"test_fails": "known gap", "test_passes": "stale entry",
                                                   "test_crashes": "should still be an error"})
        report = run_classes([cls])
        self.assertEqual(report.statuses(), {"test_fails": "expected failure", "test_passes": "unexpected success",
                                             "test_crashes": "error"})
        self.assertFalse(report.ok, "an unexpected success must fail the run")
        self.assertIn("remove it from expected_failures", report.outcome("Adopter", "test_passes").message)
        self.assertEqual(report.outcome("Adopter", "test_fails").reason, "known gap")

    def test_unittest_runner_counts_unexpected_success_as_unsuccessful(self) -> None:
        cls = adopter(ToySuite, expected_failures={"test_passes": "stale entry"})
        result = unittest.TestResult()
        unittest.TestLoader().loadTestsFromName("test_passes", cls).run(result)
        self.assertEqual(len(result.unexpectedSuccesses), 1)
        self.assertFalse(result.wasSuccessful())

    def test_the_shared_mixin_method_is_never_mutated(self) -> None:
        original = ToySuite.__dict__["test_fails"]
        first = adopter(ToySuite, "First", expected_failures={"test_fails": "first reason"})
        second = adopter(first, "Second", expected_failures={})
        self.assertIs(ToySuite.__dict__["test_fails"], original)
        self.assertFalse(hasattr(original, "__unittest_expecting_failure__"))
        self.assertIsNot(first.test_fails, original)
        self.assertIs(second.test_fails, original, "a subclass that drops the entry gets the plain check back")
        self.assertEqual(run_classes([second]).statuses()["test_fails"], "failed")

    def test_expected_failure_on_a_real_mutant(self) -> None:
        mutant = next(m for m in STOP_AND_GO_MUTANTS if m.name == "init_global_step_forgotten")
        cls = type("Known", (mutant.recipe, StopAndGoConformance, unittest.TestCase), {
            "expected_failures": {"test_consumed_samples": "double counts after resume (tracked in #12)",
                                  "test_initial_consumed_samples": "same bug"}})
        report = run_classes([cls])
        self.assertTrue(report.ok, report.format_text())
        self.assertEqual(report.statuses()["test_consumed_samples"], "expected failure")


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
