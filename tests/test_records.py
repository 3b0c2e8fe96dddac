"""RecordStore and the conversion of recorded values to weights-only-loadable records."""

from __future__ import annotations

import tempfile
import unittest
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from conformance.training.recordstore import RecordStore, to_record

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
        self.store.close()
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

    def test_one_file_per_store(self) -> None:
        for step in range(5):
            for stream in ("train_loss", "rng_state"):
                self.store.write(stream, (step, 0), torch.tensor(1.0))
        self.assertEqual([path.name for path in Path(self.folder.name).iterdir()], ["records.log"])
        self.assertEqual(self.store.keys("rng_state"), [(step, 0) for step in range(5)])

    def test_a_frame_cut_short_by_a_kill_is_not_indexed(self) -> None:
        self.store.write("s", (1,), torch.zeros(100))
        self.store.write("s", (2,), torch.ones(100))
        self.store.close()
        log = Path(self.folder.name) / "records.log"
        whole = log.read_bytes()
        second = whole.rindex(b'{"stream"') - 4  # where the second frame starts
        for cut in (second + 2, second + 30, len(whole) - 1):  # inside its length, its header, its record
            with self.subTest(cut=cut):
                log.write_bytes(whole[:cut])
                reader = RecordStore(Path(self.folder.name))
                self.assertEqual(reader.keys("s"), [(1,)])
                self.assertTrue(torch.equal(reader.read("s", (1,)), torch.zeros(100)))
        log.write_bytes(whole)  # the rest arrives: indexed on from where the last look stopped
        self.assertEqual(reader.keys("s"), [(1,), (2,)])

    def test_bad_keys_are_refused(self) -> None:
        for key in [(), (-1,)]:
            with self.subTest(key=key), self.assertRaises(ValueError):
                self.store.write("s", key, 0)


class TestSharedRecords(unittest.TestCase):
    """A store with a reference store writes a large record the reference holds byte for byte as a reference."""

    def setUp(self) -> None:
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        self.root = Path(folder.name)
        self.reference = RecordStore(self.root / "continuous")
        self.state = {"exp_avg": torch.randn(300_000), "step": torch.tensor(0.0), "lr": 0.1}  # 1.2 MB
        self.reference.write("optimizer_state", (1,), self.state)
        self.reference.write("optimizer_state", (2,), self.state)
        self.reference.close()
        self.store = RecordStore(self.root / "resumed", reference=RecordStore(self.root / "continuous"))
        self.addCleanup(self.store.close)

    def file_size(self) -> int:
        return (self.root / "resumed" / "records.log").stat().st_size

    def test_the_same_bytes_are_not_written_again_and_read_back_equal(self) -> None:
        self.store.write("optimizer_state", (2,), {key: value for key, value in self.state.items()})
        self.store.close()
        self.assertLess(self.file_size(), 200)
        reader = RecordStore(self.root / "resumed")  # finds its reference by itself, as a check's store does
        self.assertEqual(reader.keys("optimizer_state"), [(2,)])
        read = reader.read("optimizer_state", (2,))
        self.assertTrue(torch.equal(read["exp_avg"], self.state["exp_avg"]))
        self.assertEqual(read["lr"], 0.1)

    def test_bytes_that_differ_anywhere_are_written(self) -> None:
        changed = {
            "one element": {**self.state, "exp_avg": self.state["exp_avg"].clone().index_fill_(0, torch.tensor([7]),
                                                                                                 1.0)},
            "negative zero": {**self.state, "step": torch.tensor(-0.0)},  # equal as a number, not as bytes
            "another plain value": {**self.state, "lr": 0.2},
        }
        for step, (what, value) in enumerate(changed.items(), start=3):
            with self.subTest(what):
                self.reference_write_again(step)
                self.store.write("optimizer_state", (step,), value)
                read = RecordStore(self.root / "resumed").read("optimizer_state", (step,))
                self.assertTrue(all(read[key].numpy().tobytes() == value[key].numpy().tobytes()
                                    if isinstance(value[key], torch.Tensor) else read[key] == value[key]
                                    for key in value))
        self.assertGreater(self.file_size(), 3 * 1_200_000)

    def reference_write_again(self, step: int) -> None:
        reference = RecordStore(self.root / "continuous")
        reference.write("optimizer_state", (step,), self.state)
        reference.close()

    def test_small_records_and_records_the_reference_lacks_are_written(self) -> None:
        self.store.write("optimizer_state", (5,), self.state)  # the reference has no step 5
        self.assertGreater(self.file_size(), 1_200_000)
        reference = RecordStore(self.root / "continuous")
        reference.write("train_loss", (1, 0), torch.tensor(2.0))
        reference.close()
        self.store.write("train_loss", (1, 0), torch.tensor(2.0))
        self.assertIn(b'"shared": false', (self.root / "resumed" / "records.log").read_bytes())

    def test_records_start_aligned_in_their_file(self) -> None:
        for step in range(1, 4):
            self.store.write("optimizer_state", (step + 10,), {"x": torch.randn(step * 5)})
        index = self.store._index("optimizer_state")
        self.assertTrue(all(frame.offset % 64 == 0 for frame in index.values()), index)


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
