"""PredictionWriter under a real ``trainer.predict``: BioNeMo's file names, every interval and format, what the files
hold, reading back in dataset order, refusals, and resuming an interrupted job to exactly the uninterrupted result."""

from __future__ import annotations

import functools
import json
import shutil
import unittest
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from conformance import PredictionReadError, PredictionWriter, read_predictions
from conformance.predictions.atomic import TEMP_PREFIX
from conformance.predictions.collate import TENSOR_KEY, CollationDims, collate
from conformance.predictions.formats import METADATA_KEY, tensor_file_format
from conformance.runs.lightning.predict import PredictLog
from conformance.suites._prediction_files import layout_problems
from reference_models.prediction_data import PredictionDataModule
from tests.predict_support import (
    PredictionTestCase,
    ShuffledLoader,
    TwoLoaders,
    in_id_order,
    predict,
    temporary_folder,
)

RANK = "predictions__rank_0__dp_rank_0"
MANIFEST = f"{RANK}.manifest.json"


def load_tensor_file(path: Path) -> dict[str, Any]:
    """A written file's entries (metadata under ``__metadata__`` for .pt only)."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, weights_only=True)


def first_data_in(path: Path) -> str:
    """The entry whose tensor data comes first in a .pt or .safetensors file."""
    if path.suffix == ".safetensors":
        header = json.loads(path.read_bytes()[8:8 + int.from_bytes(path.read_bytes()[:8], "little")])
        return min((name for name in header if name != METADATA_KEY), key=lambda name: header[name]["data_offsets"])
    with zipfile.ZipFile(path) as archive:
        first = min((record for record in archive.infolist() if "/data/" in record.filename),
                    key=lambda record: record.header_offset)
    return list(torch.load(path, weights_only=True))[int(first.filename.rsplit("/", 1)[1])]  # storages by entry


def at_batch_1(change: Callable[[Any], Any], prediction: Any, batch_idx: int) -> Any:
    """``change(prediction)`` at batch 1, the prediction unchanged elsewhere."""
    return change(prediction) if batch_idx == 1 else prediction


def relative_files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


class TestLayouts(PredictionTestCase):
    def test_intervals_and_formats(self) -> None:
        for interval in ("batch", "epoch", "batch_and_epoch"):
            for file_format, suffix in (("pt", ".pt"), ("safetensors", ".safetensors")):
                with self.subTest(interval=interval, format=file_format):
                    folder = self.folder / f"{interval}-{file_format}"
                    predictions = predict(self.model, PredictionWriter(folder, interval, format=file_format),
                                          PredictionDataModule(num_samples=10, ragged=True))
                    self.check_files(folder, interval, suffix, predictions)

    def check_files(self, folder: Path, interval: str, suffix: str, predictions: list[dict[str, torch.Tensor]]) -> None:
        batch_names = {f"{RANK}__batch_{index}{suffix}" for index in range(3)} if interval != "epoch" else set()
        epoch_names = {f"{RANK}{suffix}"} if interval != "batch" else set()
        self.assertEqual(relative_files(folder), batch_names | epoch_names | {MANIFEST})
        for index, prediction in enumerate(predictions):
            if not batch_names:
                break
            stored = load_tensor_file(folder / f"{RANK}__batch_{index}{suffix}")
            stored.pop(METADATA_KEY, None)
            self.assertEqual(set(stored), {"idx", "logits", "batch_idx", "sample_ids"})
            self.assertEqual(stored["batch_idx"].dtype, torch.int64)
            self.assertTrue(torch.equal(stored["batch_idx"], torch.tensor([index])))
            self.assertTrue(torch.equal(stored["sample_ids"], prediction["idx"]))
            self.assertTrue(torch.equal(stored["logits"], prediction["logits"]))
        ids, expected = in_id_order(predictions)
        if epoch_names:
            stored = load_tensor_file(folder / f"{RANK}{suffix}")
            self.assertTrue(torch.equal(stored["sample_ids"], torch.arange(10)))
            self.assertTrue(torch.equal(stored["batch_idx"], torch.tensor([0] * 4 + [1] * 4 + [2] * 2)))
            self.assertTrue(torch.equal(stored["logits"], expected["logits"]))  # ragged: padded with 0
        self.assert_read_equals(folder, ids, expected)
        if interval == "batch_and_epoch":  # the reader prefers batch files; the epoch file alone reads the same
            for path in folder.glob(f"{RANK}__batch_*"):
                path.unlink()
            self.assert_read_equals(folder, ids, expected)

    def test_epoch_file_grows_from_the_spilled_largest_key_unless_it_is_padded(self) -> None:
        for ragged in (False, True):
            for file_format in ("pt", "safetensors"):
                with self.subTest(ragged=ragged, format=file_format):
                    folder = self.folder / f"{ragged}-{file_format}"
                    predictions = predict(self.model, PredictionWriter(folder, "epoch", format=file_format),
                                          PredictionDataModule(num_samples=10, ragged=ragged))
                    path = folder / f"{RANK}.{file_format}"
                    self.assertEqual(tensor_file_format(file_format).verify(path), [])
                    self.assertEqual(first_data_in(path), "logits" if not ragged else "idx")
                    stored = (torch.load(path, weights_only=True, mmap=True) if file_format == "pt"
                              else load_tensor_file(path))
                    ids, expected = in_id_order(predictions)
                    self.assertTrue(torch.equal(stored["logits"], expected["logits"]))
                    self.assertTrue(torch.equal(stored["sample_ids"], ids))

    def test_pt_metadata(self) -> None:
        predict(self.model, PredictionWriter(self.folder, "batch_and_epoch"), PredictionDataModule(num_samples=5))
        for name in (f"{RANK}.pt", f"{RANK}__batch_1.pt"):
            metadata = torch.load(self.folder / name, weights_only=True)[METADATA_KEY]
            self.assertEqual(metadata["kind"], "dict")
            self.assertEqual(metadata["dataloader_idx"], "0")
            self.assertEqual(json.loads(metadata["batch_dims"]), {"token_logits": 1})

    def test_files_per_subdir(self) -> None:
        predictions = predict(self.model, PredictionWriter(self.folder, "batch_and_epoch", files_per_subdir=2),
                              PredictionDataModule(num_samples=18))  # batches 0..4
        self.assertEqual(relative_files(self.folder), {
            f"subdir_0/{RANK}__batch_0.pt", f"subdir_0/{RANK}__batch_1.pt", f"subdir_1/{RANK}__batch_2.pt",
            f"subdir_1/{RANK}__batch_3.pt", f"subdir_2/{RANK}__batch_4.pt", f"{RANK}.pt", MANIFEST,
        })
        self.assert_read_equals(self.folder, *in_id_order(predictions))

    def test_rank_manifest(self) -> None:
        predict(self.model, PredictionWriter(self.folder, format="safetensors", files_per_subdir=4),
                PredictionDataModule(num_samples=9))
        self.assertEqual(json.loads((self.folder / MANIFEST).read_text()), {
            "writer": "conformance.predictions.writer.PredictionWriter", "global_rank": 0, "dp_rank": 0, "dp_size": 1,
            "dataloaders": {"0": {"num_samples": 9, "batches_written": 3}}, "resumed_batches": 0,
            "format": "safetensors", "write_interval": "batch", "files_per_subdir": 4,
        })

    def test_the_layout_check_takes_every_batch_idx_shape_the_reader_takes(self) -> None:
        predict(self.model, PredictionWriter(self.folder), PredictionDataModule(num_samples=9))
        computed = [PredictLog(rank=0, computed_batches=[batch for _, batch in self.model.calls])]
        batch_file = self.folder / f"{RANK}__batch_1.pt"
        stored = torch.load(batch_file, weights_only=True)
        for batch_idx in (torch.tensor(1), torch.tensor([1]), torch.tensor([[1]]), torch.full((4,), 1)):
            with self.subTest(shape=tuple(batch_idx.shape)):
                torch.save({**stored, "batch_idx": batch_idx}, batch_file)
                self.assertEqual(layout_problems(self.folder, computed), [])
        torch.save({**stored, "batch_idx": torch.tensor(0)}, batch_file)
        self.assertEqual(layout_problems(self.folder, computed),
                         [f"{batch_file} is named batch 1 but its batch_idx holds [0]"])

    def test_shuffled_loader_is_read_in_sample_id_order(self) -> None:
        predictions = predict(self.model, PredictionWriter(self.folder, "batch_and_epoch"),
                              ShuffledLoader(num_samples=10, ragged=True))
        self.assertFalse(torch.equal(torch.cat([p["idx"] for p in predictions]), torch.arange(10)))
        stored = torch.load(self.folder / f"{RANK}__batch_0.pt", weights_only=True)
        self.assertTrue(torch.equal(stored["sample_ids"], predictions[0]["idx"]))  # the sampler's indices
        ids, expected = in_id_order(predictions)
        self.assertTrue(torch.equal(ids, torch.arange(10)))
        self.assert_read_equals(self.folder, ids, expected)
        for path in self.folder.glob(f"{RANK}__batch_*"):
            path.unlink()
        self.assert_read_equals(self.folder, ids, expected)


class TestPredictionKinds(PredictionTestCase):
    def test_bare_tensor(self) -> None:
        self.model.change = lambda prediction, batch_idx: prediction["logits"]
        predictions = predict(self.model, PredictionWriter(self.folder, "batch_and_epoch"),
                              PredictionDataModule(num_samples=10, ragged=True))
        stored = torch.load(self.folder / f"{RANK}__batch_2.pt", weights_only=True)
        self.assertEqual(set(stored), {TENSOR_KEY, "batch_idx", "sample_ids", METADATA_KEY})
        self.assertEqual(stored[METADATA_KEY]["kind"], "tensor")
        expected = collate([{TENSOR_KEY: prediction} for prediction in predictions], CollationDims())[TENSOR_KEY]
        self.assertEqual(expected.shape, (10, 16, 64))  # batch 0 (lengths up to 11) padded to 16
        self.assertTrue(torch.equal(expected[:4, 11:], torch.zeros(4, 5, 64)))
        self.assert_read_equals(self.folder, torch.arange(10), expected)
        for path in self.folder.glob(f"{RANK}__batch_*"):
            path.unlink()
        self.assert_read_equals(self.folder, torch.arange(10), expected)

    def test_none_prediction_writes_nothing_for_its_batch(self) -> None:
        self.model.change = lambda prediction, batch_idx: None if batch_idx == 1 else prediction
        predictions = predict(self.model, PredictionWriter(self.folder, "batch_and_epoch"),
                              PredictionDataModule(num_samples=10))
        self.assertEqual(relative_files(self.folder), {f"{RANK}__batch_0.pt", f"{RANK}__batch_2.pt", f"{RANK}.pt",
                                                       MANIFEST})
        manifest = json.loads((self.folder / MANIFEST).read_text())
        self.assertEqual(manifest["dataloaders"]["0"], {"num_samples": 10, "batches_written": 2})
        with self.assertRaisesRegex(PredictionReadError, r"4 of 10 samples have no prediction: ids \[4, 5, 6, 7\]"):
            read_predictions(self.folder)
        ids, expected = in_id_order(predictions)
        self.assertTrue(torch.equal(ids, torch.tensor([0, 1, 2, 3, 8, 9])))
        self.assert_read_equals(self.folder, ids, expected, allow_incomplete=True)
        self.assertFalse(read_predictions(self.folder, allow_incomplete=True).complete)

    def test_none_values_are_left_out(self) -> None:
        self.model.change = lambda prediction, batch_idx: {**prediction, "hidden": None}
        predictions = predict(self.model, PredictionWriter(self.folder, "batch_and_epoch"),
                              PredictionDataModule(num_samples=5))
        for name in (f"{RANK}__batch_0.pt", f"{RANK}.pt"):
            self.assertEqual(set(torch.load(self.folder / name, weights_only=True)),
                             {"idx", "logits", "batch_idx", "sample_ids", METADATA_KEY})
        ids, expected = in_id_order(predictions)
        self.assertEqual(set(expected), {"idx", "logits"})
        self.assert_read_equals(self.folder, ids, expected)

    def test_epoch_batches_that_cannot_be_collated_are_refused_at_once(self) -> None:
        changes = {
            "dtypes": (lambda p: {**p, "logits": p["logits"].to(torch.int32)}, "same keys and dtypes"),
            "keys": (lambda p: {**p, "logits": None}, "same keys and dtypes"),
            "kind": (lambda p: p["logits"], "same keys and dtypes"),
            "sizes": (lambda p: {**p, "logits": p["logits"][..., :10]}, r"sizes \[10, 64\] in dim 2"),
        }
        for name, (change, message) in changes.items():
            with self.subTest(name):
                folder = self.folder / name
                self.model.change = functools.partial(at_batch_1, change)
                with self.assertRaisesRegex(ValueError, rf"batch 1.*{message}"):
                    predict(self.model, PredictionWriter(folder, "batch_and_epoch"),
                            PredictionDataModule(num_samples=18))
                self.assertEqual(self.model.calls, [(0, 0), (0, 1)])  # refused before predicting on
                self.assertFalse((folder / f"{RANK}__batch_1.pt").exists())
                partial = read_predictions(folder, allow_incomplete=True)
                self.assertEqual(partial.sample_ids.tolist(), [0, 1, 2, 3])
                (folder / f"{RANK}__batch_0.pt").unlink()  # the epoch file of the batches before the refused one
                self.assertEqual(read_predictions(folder, allow_incomplete=True).predictions["logits"].dtype,
                                 torch.float32)

    def test_pad_value_reads_the_same_from_batch_and_epoch_files(self) -> None:
        predictions = predict(self.model, PredictionWriter(self.folder, "batch_and_epoch", pad_value=-1.0),
                              PredictionDataModule(num_samples=10, ragged=True))
        ids, expected = in_id_order(predictions)
        expected["logits"] = collate([{"logits": p["logits"]} for p in predictions], CollationDims(),
                                     pad_value=-1.0)["logits"]
        self.assertTrue(torch.equal(expected["logits"][:4, 11:], torch.full((4, 5, 64), -1.0)))
        self.assert_read_equals(self.folder, ids, expected)
        for path in self.folder.glob(f"{RANK}__batch_*"):
            path.unlink()
        self.assert_read_equals(self.folder, ids, expected)

    def test_reserved_key_is_refused(self) -> None:
        self.model.change = lambda prediction, batch_idx: {**prediction, "batch_idx": prediction["idx"]}
        with self.assertRaisesRegex(ValueError, "'batch_idx' is reserved.*rename it in predict_step"):
            predict(self.model, PredictionWriter(self.folder), PredictionDataModule(num_samples=5))
        self.assertEqual(relative_files(self.folder), set())

    def test_two_dataloaders(self) -> None:
        predictions = predict(self.model, PredictionWriter(self.folder, "batch_and_epoch"), TwoLoaders())
        self.assertEqual(relative_files(self.folder), {
            f"{RANK}__dataloader_0__batch_0.pt", f"{RANK}__dataloader_0__batch_1.pt",
            f"{RANK}__dataloader_0__batch_2.pt", f"{RANK}__dataloader_1__batch_0.pt",
            f"{RANK}__dataloader_1__batch_1.pt", f"{RANK}__dataloader_0.pt", f"{RANK}__dataloader_1.pt", MANIFEST,
        })
        manifest = json.loads((self.folder / MANIFEST).read_text())
        self.assertEqual(manifest["dataloaders"], {"0": {"num_samples": 10, "batches_written": 3},
                                                   "1": {"num_samples": 7, "batches_written": 2}})
        with self.assertRaisesRegex(PredictionReadError, r"dataloaders \[0, 1\]: pass dataloader_idx="):
            read_predictions(self.folder)
        for dataloader_idx, size in ((0, 10), (1, 7)):
            ids, expected = in_id_order(predictions[dataloader_idx])
            self.assertTrue(torch.equal(ids, torch.arange(size)))
            self.assert_read_equals(self.folder, ids, expected, dataloader_idx=dataloader_idx)
            self.assertEqual(read_predictions(self.folder, dataloader_idx=dataloader_idx).dataloader_idx,
                             dataloader_idx)


class TestSettings(unittest.TestCase):
    def test_invalid_settings_name_the_fix(self) -> None:
        cases = [
            ({"write_interval": "step"}, r"write_interval='step'; choose one of batch, epoch, batch_and_epoch"),
            ({"format": "npz"}, r"format='npz'; choose one of pt, safetensors"),
            ({"write_interval": "epoch", "files_per_subdir": 10}, "use write_interval='batch' or 'batch_and_epoch'"),
            ({"files_per_subdir": 0}, "files_per_subdir=0; give a positive int, or None"),
            ({"files_per_subdir": 2.5}, "files_per_subdir=2.5; give a positive int"),
        ]
        for settings, message in cases:
            with self.subTest(**settings), self.assertRaisesRegex(ValueError, message):
                PredictionWriter("unused", **settings)

    def test_replace_keeps_other_settings(self) -> None:
        writer = PredictionWriter("a", "epoch", format="safetensors", pad_value=-1.0, batch_dim_key_defaults={"x": 1})
        changed = writer.replace(output_dir="b", write_interval="batch_and_epoch")
        self.assertEqual((changed.output_dir, changed.write_interval, changed.format, changed.pad_value),
                         (Path("b"), "batch_and_epoch", "safetensors", -1.0))
        self.assertEqual(changed.dims.batch_dim("x"), 1)


class TestResume(PredictionTestCase):
    """A job that fails at batch 5 of 8 and is run again into the same folder with a healthy model."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.reference = temporary_folder(cls) / "uninterrupted"
        predictions = predict(cls.model, PredictionWriter(cls.reference, "batch_and_epoch"), cls.data())
        cls.ids, cls.expected = in_id_order(predictions)

    @staticmethod
    def data() -> PredictionDataModule:
        return PredictionDataModule(num_samples=30, ragged=True)  # 8 batches, the last of 2 samples

    def interrupted(self, interval: str) -> None:
        self.model.fail_at = 5
        with self.assertRaisesRegex(RuntimeError, "injected failure at batch 5"):
            predict(self.model, PredictionWriter(self.folder, interval), self.data())
        self.model.fail_at = None
        self.assertFalse((self.folder / MANIFEST).exists())
        with self.assertRaisesRegex(PredictionReadError, "no rank manifest.*allow_incomplete=True"):
            read_predictions(self.folder)
        partial = read_predictions(self.folder, allow_incomplete=True)
        self.assertFalse(partial.complete)
        self.assertTrue(torch.equal(partial.sample_ids, torch.arange(20)))
        for key, value in self.expected.items():
            self.assertTrue(torch.equal(partial.predictions[key], value[:20]), key)

    def resume(self, interval: str) -> list[Any]:
        predictions = predict(self.model, PredictionWriter(self.folder, interval), self.data())
        self.assertEqual(self.model.calls, [(0, 5), (0, 6), (0, 7)])
        self.assertEqual([p is None for p in predictions], [True] * 5 + [False] * 3)
        self.assertFalse(hasattr(self.model, "_conformance_original_predict_step"))  # predict_step restored
        self.assert_read_equals(self.folder, self.ids, self.expected)
        self.assertTrue(read_predictions(self.folder).complete)
        manifest = json.loads((self.folder / MANIFEST).read_text())
        self.assertEqual((manifest["resumed_batches"], manifest["dataloaders"]["0"]),
                         (5, {"num_samples": 30, "batches_written": 3}))
        return predictions

    def assert_same_as_uninterrupted(self, names: list[str]) -> None:
        for name in names:
            self.assertEqual((self.folder / name).read_bytes(), (self.reference / name).read_bytes(), name)

    def test_epoch_interval(self) -> None:
        self.interrupted("epoch")
        spill = self.folder / f".spill__{RANK}"
        self.assertEqual(relative_files(self.folder) - {f"{RANK}.pt"},
                         {f"{spill.name}/{name}" for name in ("data.bin", "journal.jsonl", "leading_0.bin")})
        with open(spill / "journal.jsonl", "ab") as journal:  # a kill while committing batch 5
            journal.write(b'{"batch_idx": 5, "dataloader_idx": 0, "ki')
        for name in ("data.bin", "leading_0.bin"):
            with open(spill / name, "ab") as data:
                data.write(b"\1" * 1000)
        self.resume("epoch")
        self.assertEqual(relative_files(self.folder), {f"{RANK}.pt", MANIFEST})  # the spill is gone
        self.assert_same_as_uninterrupted([f"{RANK}.pt"])

    def test_epoch_interval_killed_after_its_leading_file_became_the_epoch_file(self) -> None:
        self.interrupted("epoch")
        spill = self.folder / f".spill__{RANK}"
        (spill / "leading_0.bin").unlink()  # renamed into place, the kill before the spill was deleted
        predict(self.model, PredictionWriter(self.folder, "epoch"), self.data())
        self.assertEqual(self.model.calls, [(0, index) for index in range(8)])  # committed bytes gone: predicted again
        self.assert_read_equals(self.folder, self.ids, self.expected)
        self.assert_same_as_uninterrupted([f"{RANK}.pt"])

    def test_batch_interval(self) -> None:
        self.interrupted("batch")
        self.assertEqual(relative_files(self.folder), {f"{RANK}__batch_{index}.pt" for index in range(5)})
        leftover = self.folder / f"{TEMP_PREFIX}999-{RANK}__batch_5.pt"  # a write that a kill cut short
        leftover.write_bytes(b"PK\3\4 truncated")
        self.resume("batch")
        self.assertFalse(leftover.exists())
        self.assert_same_as_uninterrupted([f"{RANK}__batch_{index}.pt" for index in range(8)])

    def test_batch_and_epoch_interval(self) -> None:
        self.interrupted("batch_and_epoch")
        (self.folder / f"{RANK}.pt").unlink()  # as if killed: no epoch file, the spill still there
        self.resume("batch_and_epoch")
        self.assert_same_as_uninterrupted([f"{RANK}.pt", *(f"{RANK}__batch_{index}.pt" for index in range(8))])

    def test_finished_folder_is_refused(self) -> None:
        shutil.copytree(self.reference, self.folder, dirs_exist_ok=True)
        before = {path: path.read_bytes() for path in self.folder.iterdir()}
        for interval in ("batch", "epoch"):
            with self.subTest(interval=interval), self.assertRaisesRegex(FileExistsError, "already completed"):
                predict(self.model, PredictionWriter(self.folder, interval), self.data())
            self.assertEqual(self.model.calls, [])
        self.assertEqual({path: path.read_bytes() for path in self.folder.iterdir()}, before)


class TestResumeInPlace(TestResume):
    """The same without ragged sequences: the epoch file grows from the spill's leading file instead of a copy."""

    @staticmethod
    def data() -> PredictionDataModule:
        return PredictionDataModule(num_samples=30)


if __name__ == "__main__":
    unittest.main()
