"""compare_stream: records that are the same bytes skip the comparison only when that cannot change the outcome."""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

import torch

from conformance.suites._trajectory import compare_stream
from conformance.training.recordstore import RecordStore


class TestIdenticalRecords(unittest.TestCase):
    def setUp(self) -> None:
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        self.stores = {name: RecordStore(Path(folder.name) / name) for name in ("continuous", "interrupted", "resumed")}
        for store in self.stores.values():
            self.addCleanup(store.close)

    def record(self, key: int, values: dict[str, torch.Tensor]) -> None:
        """The same record in the continuous run and in the interrupted (key < 2) or the resumed run."""
        self.stores["continuous"].write("s", (key,), values["continuous"])
        self.stores["interrupted" if key < 2 else "resumed"].write("s", (key,), values["trajectory"])

    def compare(self, **options: object):
        return compare_stream("s", self.stores["continuous"], self.stores["resumed"],
                              interrupted=self.stores["interrupted"],
                              options=lambda key: {"atol": 1e-6, "rtol": 0.0, **options})

    def test_a_nan_in_both_runs_still_diverges_without_equal_nan(self) -> None:
        same = torch.tensor([1.0, 2.0])
        self.record(0, {"continuous": same, "trajectory": same})
        self.record(1, {"continuous": torch.tensor([float("nan")]), "trajectory": torch.tensor([float("nan")])})
        self.record(2, {"continuous": same, "trajectory": same})
        outcome = self.compare()
        self.assertEqual([key for key, _, _ in outcome.diverging], [(1,)])
        self.assertEqual(outcome.compared, 3)
        self.assertTrue(self.compare(equal_nan=True).ok)

    def test_the_worst_leaf_is_the_one_a_full_comparison_finds(self) -> None:
        self.record(0, {"continuous": torch.tensor([1.0]), "trajectory": torch.tensor([1.0])})
        self.record(1, {"continuous": torch.tensor([1.0]), "trajectory": torch.tensor([1.0 + 5e-7])})
        self.record(2, {"continuous": torch.tensor([3.0]), "trajectory": torch.tensor([3.0])})
        outcome = self.compare()
        self.assertTrue(outcome.ok)
        self.assertAlmostEqual(outcome.worst.max_abs_diff, 5e-7, delta=1e-7)
        self.assertEqual(outcome.compared, 3)


if __name__ == "__main__":
    unittest.main()
