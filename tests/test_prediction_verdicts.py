"""PredictionWriterConformance blames what went wrong: a failed run is reported as failed, not as bad input."""

from __future__ import annotations

import unittest
from typing import Any

from conformance import PredictionWriterConformance
from conformance.report import run_classes
from reference_models.gpt import TinyGPT
from reference_models.recipes import PredictionRecipe


class GPTFailingToPredict(TinyGPT):
    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        raise RuntimeError("the model cannot predict (simulated)")


class TestAFailedReferenceRun(unittest.TestCase):
    def test_every_check_says_the_reference_run_failed(self) -> None:
        """Not, for example, that the dataset has the wrong size: a failed run recorded none."""
        cls = type("FailingPredictions", (PredictionRecipe, PredictionWriterConformance, unittest.TestCase),
                   {"make_model": classmethod(lambda cls: GPTFailingToPredict())})
        report = run_classes([cls])
        self.assertEqual(set(report.statuses().values()), {"failed"})
        for check in PredictionWriterConformance.check_names():
            with self.subTest(check=check):
                message = report.outcome("FailingPredictions", check).message
                self.assertIn("the reference run failed, so nothing can be certified", message)
                self.assertIn("the model cannot predict (simulated)", message)


if __name__ == "__main__":
    unittest.main()
