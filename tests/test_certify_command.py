"""``python -m conformance certify``: progress, report table, JSON and JUnit files, exit status."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from xml.etree import ElementTree

from conformance import StopAndGoConformance
from reference_models import certify as reference_classes

ROOT = Path(__file__).resolve().parents[1]


def certify(*args: str) -> tuple[subprocess.CompletedProcess, Path, tempfile.TemporaryDirectory]:
    folder = tempfile.TemporaryDirectory()
    output = Path(folder.name) / "report"
    process = subprocess.run([sys.executable, "-m", "conformance", "certify", *args, "--output", str(output)],
                             capture_output=True, text=True, cwd=ROOT, check=False)
    return process, output, folder


class TestCertifyCommand(unittest.TestCase):
    def test_reference_recipe_passes_and_writes_reports(self) -> None:
        process, output, folder = certify("-k", "TinyBERT")
        with folder:
            self.assertEqual(process.returncode, 0, process.stdout + process.stderr)
            self.assertIn("resumed: step 7/7", process.stderr, "progress is shown while training")
            self.assertIn("test_final_weights", process.stdout)
            known_gaps = len(reference_classes.TestTinyBERTStopAndGo.expected_failures)  # non-empty on Lightning < 2.5 only
            checks = len(StopAndGoConformance.check_names())
            self.assertIn(f"{checks - 2 - known_gaps} passed", process.stdout,
                          "all but test_elastic_resume and test_callback_state (no callback holds tensors)")
            self.assertIn("1 skipped, 1 not applicable", process.stdout)
            report = json.loads((output / "report.json").read_text())
            self.assertTrue(report["ok"])
            self.assertEqual(len(report["checks"]), checks)
            suites = ElementTree.parse(output / "report.xml").getroot()
            self.assertEqual(suites.find("testsuite").get("tests"), str(checks))
            self.assertEqual(suites.find("testsuite").get("failures"), "0")

    @unittest.skipIf(reference_classes.LIGHTNING_RESUMES_ONE_BATCH_EARLY, "Lightning < 2.5 resumes one batch early")
    def test_the_reference_gpt_on_two_ranks_passes_under_certify_and_pytest(self) -> None:
        process, _, folder = certify("-k", "TestTinyGPTDDPStopAndGo")
        with folder:
            self.assertEqual(process.returncode, 0, process.stdout + process.stderr)
            self.assertIn(f"{len(StopAndGoConformance.check_names()) - 2} passed, 1 skipped, 1 not applicable",
                          process.stdout)
        tested = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                 "reference_models/certify.py::TestTinyGPTDDPStopAndGo"],
                                capture_output=True, text=True, cwd=ROOT, check=False)
        self.assertEqual(tested.returncode, 0, tested.stdout + tested.stderr)
        self.assertRegex(tested.stdout, rf"\b{len(StopAndGoConformance.check_names()) - 2} passed, 2 skipped\b")

    def test_failing_recipe_exits_non_zero_and_says_where(self) -> None:
        process, output, folder = certify("tests/failing_recipes.py")  # a path works as well as a module name
        with folder:
            self.assertEqual(process.returncode, 1)
            self.assertIn("FAIL   test_rng_state", process.stdout)
            self.assertIn("first divergence at optimizer step 5, micro-batch 0", process.stdout + process.stderr)
            suites = ElementTree.parse(output / "report.xml").getroot()
            failures = [case.get("name") for case in suites.iter("testcase") if case.find("failure") is not None]
            self.assertIn("test_rng_state", failures)

    def test_nothing_to_run_is_an_error(self) -> None:
        process, _, folder = certify("-k", "NoSuchClass")
        with folder:
            self.assertEqual(process.returncode, 2)
            self.assertIn("no conformance classes found", process.stderr)

    def test_a_path_that_cannot_be_imported_by_name_says_so(self) -> None:
        with tempfile.NamedTemporaryFile(suffix=".py") as outside:
            process, _, folder = certify(outside.name)
        with folder:
            self.assertEqual(process.returncode, 2)
            self.assertIn("lies outside the current folder", process.stderr)

    def test_a_class_passed_as_a_module_points_to_k(self) -> None:
        process, _, folder = certify("reference_models.certify.TestTinyBERTStopAndGo")
        with folder:
            self.assertEqual(process.returncode, 2)
            self.assertIn("certify reference_models.certify -k TestTinyBERTStopAndGo", process.stderr)

    def test_unimportable_module_is_named(self) -> None:
        process, _, folder = certify("no_such_module_here")
        with folder:
            self.assertEqual(process.returncode, 2)
            self.assertIn("cannot import 'no_such_module_here'", process.stderr)


if __name__ == "__main__":
    unittest.main()
