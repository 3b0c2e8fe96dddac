"""Writers the kit did not write, built from the README's writer contract, pass PredictionWriterConformance; what
they declare they cannot do is skipped with the reason, and an undeclared gap fails."""

from __future__ import annotations

import unittest

from conformance.report import run_classes
from tests import outside_writers

SKIPPED_WITHOUT_REPLACE = {"test_batch_and_epoch_intervals_agree", "test_files_per_subdir"}


class TestOutsideWriters(unittest.TestCase):
    def assertVerdicts(self, cls: type, skipped: set[str]) -> None:
        report = run_classes([cls])
        statuses = report.statuses()
        self.assertEqual({check for check, status in statuses.items() if status != "passed"}, skipped,
                         report.format_text())
        self.assertEqual({statuses[check] for check in skipped}, {"skipped"})

    def test_a_torch_save_writer_with_the_kits_layout_passes(self) -> None:
        self.assertVerdicts(outside_writers.TestTorchSaveWriter, SKIPPED_WITHOUT_REPLACE | {"test_resume_after_crash"})

    def test_a_writer_with_its_own_format_passes_through_its_reader_hook(self) -> None:
        self.assertVerdicts(outside_writers.TestNumpyArchiveWriter, SKIPPED_WITHOUT_REPLACE | {
            "test_resume_after_crash", "test_file_layout", "test_files_safe_to_read"})
        report = run_classes([outside_writers.TestNumpyArchiveWriter], checks=["test_file_layout"])
        self.assertIn("read_predictions is overridden", report.outcomes[0].message)

    def test_a_writer_that_does_not_declare_it_cannot_resume_fails_the_resume_check(self) -> None:
        cls = outside_writers.TestUndeclaredNumpyArchiveWriter
        outcome = run_classes([cls], checks=["test_resume_after_crash"]).outcomes[0]
        self.assertEqual(outcome.status, "failed")
        self.assertIn("a resumed job must skip finished batches", outcome.message)


if __name__ == "__main__":
    unittest.main()
