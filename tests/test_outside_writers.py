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

    def test_the_memory_check_repeats_the_default_data_of_a_recipe_without_a_memory_data_module(self) -> None:
        report = run_classes([outside_writers.TestTorchSaveWriterOnDefaultData], checks=["test_memory_flat"])
        outcome = report.outcomes[0]
        self.assertEqual(outcome.status, "passed", outcome.message)
        predicted = float(outcome.summary.split(" MiB were predicted")[0].rsplit(" ", 1)[1])
        self.assertGreaterEqual(predicted, outside_writers.TestTorchSaveWriterOnDefaultData.memory_check_min_payload_mib)

    def test_a_writer_that_buffers_every_batch_fails_the_memory_check_on_the_repeated_default_data(self) -> None:
        outcome = run_classes([outside_writers.TestBufferingWriterOnDefaultData], checks=["test_memory_flat"]).outcomes[0]
        self.assertEqual(outcome.status, "failed")
        self.assertIn("the writer keeps predictions in memory", outcome.message)

    def test_a_stream_that_cannot_be_repeated_fails_the_memory_check_saying_why_and_what_to_give(self) -> None:
        outcome = run_classes([outside_writers.TestTorchSaveWriterOnStreamedData],
                              checks=["test_memory_flat"]).outcomes[0]
        self.assertEqual(outcome.status, "failed")
        self.assertIn("the default predict data could not be repeated: its predict loader is a DataLoader over an "
                      "IterableDataset", outcome.message)
        self.assertIn("return a data module that predicts more from the classmethod make_memory_datamodule()",
                      outcome.message)


if __name__ == "__main__":
    unittest.main()
