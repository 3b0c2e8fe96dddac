"""The reference run's consumed-samples count against the sample ids it trained on (test_consumed_samples): replica
ranks count once, a distributed sampler's padding duplicate may be counted or not, a count of optimizer steps is a
miscount at the first step it shows."""

from __future__ import annotations

import tempfile
import unittest

import torch

from conformance.suites._consumed_count import first_miscount
from conformance.training.recordstore import RecordStore


def _store(folder: str, batches: dict[tuple[int, int], list[int]], counts: dict[int, int]) -> RecordStore:
    """A run's records: its start at 0 consumed samples, its training batches by key, its count after each step."""
    store = RecordStore(folder)
    store.write("start", (0,), {"consumed_samples": 0})
    for key, ids in batches.items():
        store.write("train_inputs", key, {"idx": torch.tensor(ids)})
    for step, count in counts.items():
        store.write("consumed_samples", (step,), count)
    return store


def _ids(batch: dict[str, torch.Tensor]) -> list[int]:
    return batch["idx"].tolist()


class TestFirstMiscount(unittest.TestCase):
    def test_a_count_of_the_samples_trained_is_no_miscount(self) -> None:
        with tempfile.TemporaryDirectory() as folder:
            store = _store(folder, {(0, 0): [0, 1], (0, 1): [2, 3], (1, 0): [4, 5], (1, 1): [6, 7]}, {1: 4, 2: 8})
            self.assertIsNone(first_miscount([store], _ids))

    def test_replica_ranks_count_once_and_data_parallel_ranks_add_up(self) -> None:
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            replicas = [_store(folder, {(0, 0): [0, 1], (1, 0): [2, 3]}, {1: 2, 2: 4}) for folder in (a, b)]
            self.assertIsNone(first_miscount(replicas, _ids), "tensor-parallel ranks train on the same samples")
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            ranks = [_store(a, {(0, 0): [0, 1], (1, 0): [4, 5]}, {1: 4, 2: 8}),
                     _store(b, {(0, 0): [2, 3], (1, 0): [6, 7]}, {1: 4, 2: 8})]
            self.assertIsNone(first_miscount(ranks, _ids))

    def test_a_padding_duplicate_may_be_left_out_of_the_count(self) -> None:
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            ranks = [_store(a, {(0, 0): [0, 1]}, {1: 3}), _store(b, {(0, 0): [2, 0]}, {1: 3})]
            self.assertIsNone(first_miscount(ranks, _ids))

    def test_a_count_of_optimizer_steps_is_a_miscount_at_its_first_step(self) -> None:
        with tempfile.TemporaryDirectory() as folder:
            store = _store(folder, {(0, 0): [0, 1, 2, 3], (2, 0): [4, 5, 6, 7]}, {1: 4, 2: 8, 3: 12, 4: 16})
            miscount = first_miscount([store], _ids)
        self.assertEqual((miscount.step, miscount.reported, miscount.trained), (2, 8, 4))
        self.assertIn("a resume from that step skips data", miscount.describe())


if __name__ == "__main__":
    unittest.main()
