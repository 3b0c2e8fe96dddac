"""expected_failures under unittest, pytest and certify: expected failure, unexpected success, crash stays an error.

The marking relies on unittest details (see conformance/suites/_expected_failures.py); these tests pin what each
runner makes of it, so a change in either runner shows up here.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

from conformance.report import run_classes
from reference_models.mutants.stop_and_go import STOP_AND_GO_MUTANTS
from tests.toy_suite import ToySuite, adopter

ROOT = Path(__file__).resolve().parents[1]
MARKED = {"test_fails": "known gap", "test_passes": "stale entry", "test_crashes": "should still be an error"}


class TestExpectedFailures(unittest.TestCase):
    def test_expected_failure_unexpected_success_and_crash(self) -> None:
        cls = adopter(ToySuite, expected_failures=MARKED)
        report = run_classes([cls])
        self.assertEqual(report.statuses(), {"test_fails": "expected failure", "test_passes": "unexpected success",
                                             "test_crashes": "error"})
        self.assertFalse(report.ok, "an unexpected success must fail the run")
        self.assertIn("remove it from expected_failures", report.outcome("Adopter", "test_passes").message)
        self.assertEqual(report.outcome("Adopter", "test_fails").reason, "known gap")

    def test_unittest_shows_why_an_unexpected_success_fails(self) -> None:
        cls = adopter(ToySuite, expected_failures={"test_passes": "stale entry"})
        result = unittest.TestResult()
        unittest.TestLoader().loadTestsFromName("test_passes", cls).run(result)
        self.assertFalse(result.wasSuccessful())
        [(_, traceback)] = result.failures
        self.assertIn("unexpected success: test_passes passed but expected_failures says it fails (stale entry); "
                      "remove it from expected_failures", traceback)

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
        cls = type("Known", (mutant.conformance_class,), {
            "expected_failures": {"test_consumed_samples": "double counts after resume (tracked in #12)",
                                  "test_initial_consumed_samples": "same bug"},
            "resume_in_fresh_process": False})  # made in the test: fresh processes could not import it
        report = run_classes([cls])
        self.assertTrue(report.ok, report.format_text())
        self.assertEqual(report.statuses()["test_consumed_samples"], "expected failure")

    def test_pytest_reports_xfail_unexpected_success_and_error(self) -> None:
        module = textwrap.dedent(f"""
            import unittest
            from tests.toy_suite import ToySuite

            class TestAdopter(ToySuite, unittest.TestCase):
                expected_failures = {MARKED!r}
        """)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "test_marked.py"
            path.write_text(module)
            run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", str(path)],
                                 capture_output=True, text=True, cwd=ROOT, check=False)
        found = re.findall(r"^(PASSED|FAILED|XFAIL|XPASS|ERROR) \S*::TestAdopter::(\w+)", run.stdout, re.MULTILINE)
        outcomes = {test: status for status, test in found}
        self.assertEqual(outcomes, {"test_fails": "XFAIL", "test_passes": "FAILED", "test_crashes": "FAILED"},
                         run.stdout)
        self.assertIn("test_passes passed but expected_failures says it fails (stale entry); remove it from "
                      "expected_failures", run.stdout)
        self.assertIn("RuntimeError: bug in the check itself", run.stdout)
        self.assertNotEqual(run.returncode, 0)


if __name__ == "__main__":
    unittest.main()
