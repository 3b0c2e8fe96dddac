"""RecordStore and the conversion of recorded values to weights-only-loadable records."""

from __future__ import annotations

import tempfile
import unittest
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from conformance.records import RecordStore, to_record

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
        for key in [(10, 0), (2, 1), (2, 0)]:
            self.store.write("train_loss", key, {"loss": torch.tensor(float(key[0]))})
        self.assertEqual(self.store.keys("train_loss"), [(2, 0), (2, 1), (10, 0)])
        self.assertEqual(float(self.store.read("train_loss", (10, 0))["loss"]), 10.0)
        self.assertEqual([key for key, _ in self.store.items("train_loss")], [(2, 0), (2, 1), (10, 0)])
        self.assertEqual(self.store.keys("never_written"), [])

    def test_a_record_is_never_overwritten(self) -> None:
        self.store.write("global_step", (1,), 1)
        with self.assertRaises(FileExistsError):
            self.store.write("global_step", (1,), 2)

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
