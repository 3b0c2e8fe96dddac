"""The plain PyTorch recipe of tests/outside_torch_loop.py, written without the kit, passes every applicable stop-and-go
check of the loop backend; the same recipe with its RNG carrier left out of the training state fails on the
trajectory, so the pass is not the kit comparing nothing."""

from __future__ import annotations

import unittest

from conformance.report import run_classes
from tests import outside_torch_loop as outside

NOT_CHECKED = {"test_consumed_samples", "test_initial_consumed_samples", "test_elastic_resume", "test_callback_state"}


class TestOutsideTorchLoop(unittest.TestCase):
    def test_the_outside_recipe_passes_every_applicable_check(self) -> None:
        report = run_classes([outside.TestOutsideTorchLoopStopAndGo])
        statuses = report.statuses()
        self.assertEqual({check for check, status in statuses.items() if status != "passed"}, NOT_CHECKED,
                         report.format_text())
        self.assertGreaterEqual(sum(status == "passed" for status in statuses.values()), 14)

    def test_the_recipe_without_its_rng_carrier_fails_on_the_trajectory(self) -> None:
        report = run_classes([outside.TestOutsideTorchLoopWithoutRNGCarrier], checks=["test_rng_state", "test_train_loss", "test_final_weights"])
        statuses = report.statuses()
        self.assertEqual(statuses, {"test_rng_state": "failed", "test_train_loss": "failed",
                                    "test_final_weights": "failed"}, report.format_text())


if __name__ == "__main__":
    unittest.main()
