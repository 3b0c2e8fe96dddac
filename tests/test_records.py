"""RecordStore and the conversion of recorded values to weights-only-loadable records."""

from __future__ import annotations

import tempfile
import unittest
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from conformance.training.records import RecordStore, to_record

Pair = namedtuple("Pair", "left right")


@dataclass
class Batch:
    tokens: torch.Tensor
    ids: list


class TestRecordStore(unittest.TestCase):
    def setUp(self) -> None:
        self.folder = tempfile.TemporaryDirectory()
        self.store = RecordStore(Path(self.folder.name))

    def tearDown(self) -> None:
        self.folder.cleanup()

    def test_write_read_and_sorted_keys(self) -> None:
        for key in [(2, 0), (2, 1), (10, 0)]:
            self.store.write("train_loss", key, {"loss": torch.tensor(float(key[0]))})
        self.assertEqual(self.store.keys("train_loss"), [(2, 0), (2, 1), (10, 0)])
        self.assertEqual(float(self.store.read("train_loss", (10, 0))["loss"]), 10.0)
        self.assertEqual([key for key, _ in self.store.items("train_loss")], [(2, 0), (2, 1), (10, 0)])
        self.assertEqual(self.store.keys("never_written"), [])

    def test_a_record_is_never_overwritten_or_written_out_of_order(self) -> None:
        self.store.write("global_step", (2,), 2)
        for key in [(2,), (1,)]:
            with self.subTest(key=key), self.assertRaises(ValueError) as caught:
                self.store.write("global_step", key, 0)
            self.assertIn("keys must increase", str(caught.exception))
        self.assertEqual(self.store.read("global_step", (2,)), 2)

    def test_reading_sees_records_appended_after_a_first_read(self) -> None:
        self.store.write("s", (1,), "a")
        self.assertEqual(self.store.keys("s"), [(1,)])
        self.store.write("s", (2,), "b")
        self.assertEqual([value for _, value in self.store.items("s")], ["a", "b"])
        with self.assertRaises(KeyError):
            self.store.read("s", (3,))

    def test_one_file_per_stream(self) -> None:
        for step in range(5):
            self.store.write("train_loss", (step, 0), torch.tensor(1.0))
        self.assertEqual([path.name for path in Path(self.folder.name).iterdir()], ["train_loss.log"])

    def test_bad_keys_are_refused(self) -> None:
        for key in [(), (-1,)]:
            with self.subTest(key=key), self.assertRaises(ValueError):
                self.store.write("s", key, 0)


class TestToRecord(unittest.TestCase):
    def test_containers_become_plain(self) -> None:
        value = to_record({"pair": Pair(1, np.arange(3)), "batch": Batch(torch.ones(2), [1, "a"])})
        self.assertEqual(set(value["pair"]), {"left", "right"})
        self.assertIsInstance(value["pair"]["right"], torch.Tensor)
        self.assertEqual(value["batch"]["ids"], [1, "a"])

    def test_views_are_copied_so_only_their_elements_are_saved(self) -> None:
        big = torch.arange(1000.0)
        view = to_record(big[:2])
        self.assertEqual(view.untyped_storage().nbytes(), 8)
        whole = to_record(big)
        self.assertEqual(whole.data_ptr(), big.data_ptr(), "a whole tensor is not copied")

    def test_unrecordable_values_are_named_with_their_path(self) -> None:
        with self.assertRaises(TypeError) as caught:
            to_record({"x": [object()]})
        self.assertIn("root['x'][0]", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
