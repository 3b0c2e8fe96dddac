"""ParquetPredictionWriter: shards and their manifests, one row group per batch, valid shards after an exception,
resuming exactly, a killed run's unfinished shard, and an empty dataset."""

from __future__ import annotations

import json
import unittest
import zlib
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from conformance import ParquetPredictionWriter, PredictionReadError, read_predictions
from conformance.predictions.atomic import TEMP_PREFIX
from conformance.predictions.collate import TENSOR_KEY, CollationDims, collate
from reference_models.prediction_data import PredictionDataModule
from tests.predict_support import (
    PredictionTestCase,
    QuietLightning,
    ShuffledLoader,
    TwoLoaders,
    in_id_order,
    predict,
    probe_model,
    temporary_folder,
)

RANK = "predictions__rank_0__dp_rank_0"


def shard_name(shard: int, dataloader_idx: int | None = None) -> str:
    loader = f"__dataloader_{dataloader_idx}" if dataloader_idx is not None else ""
    return f"{RANK}{loader}__shard_{shard}.parquet"


def shard_manifest(folder: Path, shard: int, dataloader_idx: int | None = None) -> dict[str, Any]:
    return json.loads((folder / shard_name(shard, dataloader_idx).replace(".parquet", ".manifest.json")).read_text())


def data() -> PredictionDataModule:
    return PredictionDataModule(num_samples=30, ragged=True)  # 8 batches, the last of 2 samples


class ParquetTestCase(PredictionTestCase):
    """Builds the model once per class; checks shards."""

    def assert_valid_shard(self, shard: int, *, batches: list[int], ids: range, complete: bool = True) -> None:
        """The shard reads with pyarrow, one row group per batch, and its manifest describes it."""
        path = self.folder / shard_name(shard)
        parquet = pq.ParquetFile(path)
        self.assertEqual(parquet.num_row_groups, len(batches))
        for group, batch_idx in enumerate(batches):
            self.assertEqual(set(parquet.read_row_group(group).column("batch_idx").to_pylist()), {batch_idx})
        table = parquet.read()
        self.assertEqual(table.column("sample_id").to_pylist(), list(ids))
        self.assertEqual(table.column_names, ["sample_id", "batch_idx", "idx", "idx__shape", "logits",
                                              "logits__shape"])
        manifest = shard_manifest(self.folder, shard)
        self.assertEqual(manifest["crc32"], f"{zlib.crc32(path.read_bytes()):08x}")
        self.assertEqual({key: manifest[key] for key in ("shard", "rows", "min_sample_id", "max_sample_id",
                                                        "batches", "dataloader_idx", "complete")},
                         {"shard": path.name, "rows": len(ids), "min_sample_id": min(ids),
                          "max_sample_id": max(ids), "batches": batches, "dataloader_idx": 0, "complete": complete})


class TestShards(ParquetTestCase):
    def test_shards_manifests_and_row_groups(self) -> None:
        predictions = predict(self.model, ParquetPredictionWriter(self.folder, batches_per_shard=3), data())
        self.assertEqual({path.name for path in self.folder.iterdir()},
                         {shard_name(shard) for shard in range(3)} | {f"{RANK}.manifest.json"}
                         | {shard_name(shard).replace(".parquet", ".manifest.json") for shard in range(3)})
        self.assert_valid_shard(0, batches=[0, 1, 2], ids=range(12))
        self.assert_valid_shard(1, batches=[3, 4, 5], ids=range(12, 24))
        self.assert_valid_shard(2, batches=[6, 7], ids=range(24, 30))
        self.assertIsNone(shard_manifest(self.folder, 2)["interrupted_by"])
        rank_manifest = json.loads((self.folder / f"{RANK}.manifest.json").read_text())
        self.assertEqual((rank_manifest["format"], rank_manifest["batches_per_shard"], rank_manifest["dataloaders"]),
                         ("parquet", 3, {"0": {"num_samples": 30, "batches_written": 8}}))
        self.assert_read_equals(self.folder, *in_id_order(predictions))

    def test_one_shard_by_default(self) -> None:
        predictions = predict(self.model, ParquetPredictionWriter(self.folder), data())
        self.assert_valid_shard(0, batches=list(range(8)), ids=range(30))
        self.assertEqual(len(list(self.folder.glob("*.parquet"))), 1)
        self.assert_read_equals(self.folder, *in_id_order(predictions))

    def test_ragged_shuffled_data_is_read_in_sample_id_order(self) -> None:
        predictions = predict(self.model, ParquetPredictionWriter(self.folder, batches_per_shard=2),
                              ShuffledLoader(num_samples=10, ragged=True))
        ids, expected = in_id_order(predictions)
        self.assertTrue(torch.equal(ids, torch.arange(10)))
        self.assertEqual(expected["logits"].shape, (10, 16, 64))
        self.assert_read_equals(self.folder, ids, expected)

    def test_bare_tensor(self) -> None:
        self.model.change = lambda prediction, batch_idx: prediction["logits"]
        predictions = predict(self.model, ParquetPredictionWriter(self.folder),
                              PredictionDataModule(num_samples=10, ragged=True))
        self.assertEqual(pq.ParquetFile(self.folder / shard_name(0)).schema_arrow.names,
                         ["sample_id", "batch_idx", TENSOR_KEY, f"{TENSOR_KEY}__shape"])
        expected = collate([{TENSOR_KEY: prediction} for prediction in predictions], CollationDims())[TENSOR_KEY]
        self.assert_read_equals(self.folder, torch.arange(10), expected)

    def test_two_dataloaders(self) -> None:
        predictions = predict(self.model, ParquetPredictionWriter(self.folder), TwoLoaders())
        self.assertEqual(sorted(path.name for path in self.folder.glob("*.parquet")),
                         [shard_name(0, dataloader_idx=0), shard_name(1, dataloader_idx=1)])
        self.assertEqual(shard_manifest(self.folder, 1, dataloader_idx=1)["dataloader_idx"], 1)
        with self.assertRaisesRegex(PredictionReadError, "pass dataloader_idx="):
            read_predictions(self.folder)
        for dataloader_idx in (0, 1):
            self.assert_read_equals(self.folder, *in_id_order(predictions[dataloader_idx]),
                                    dataloader_idx=dataloader_idx)

    def test_invalid_batches_per_shard(self) -> None:
        for value in (0, -1, 1.5):
            with self.subTest(value=value), self.assertRaisesRegex(ValueError, "give a positive int, or None"):
                ParquetPredictionWriter(self.folder, batches_per_shard=value)


class TestInterruptions(ParquetTestCase):
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        predictions = predict(cls.model, ParquetPredictionWriter(temporary_folder(cls)), data())
        cls.ids, cls.expected = in_id_order(predictions)

    def test_exception_leaves_valid_shards_and_resume_completes_exactly(self) -> None:
        self.model.fail_at = 5
        with self.assertRaisesRegex(RuntimeError, "injected failure at batch 5"):
            predict(self.model, ParquetPredictionWriter(self.folder, batches_per_shard=3), data())
        self.model.fail_at = None
        self.assertFalse((self.folder / f"{RANK}.manifest.json").exists())
        self.assertEqual([path.name for path in self.folder.iterdir() if path.name.startswith(TEMP_PREFIX)], [])
        self.assert_valid_shard(0, batches=[0, 1, 2], ids=range(12))
        self.assert_valid_shard(1, batches=[3, 4], ids=range(12, 20), complete=False)
        self.assertEqual(shard_manifest(self.folder, 1)["interrupted_by"], "RuntimeError: injected failure at batch 5")
        partial = read_predictions(self.folder, allow_incomplete=True)
        self.assertTrue(torch.equal(partial.sample_ids, torch.arange(20)))
        self.assertTrue(torch.equal(partial.predictions["logits"], self.expected["logits"][:20]))

        predict(self.model, ParquetPredictionWriter(self.folder, batches_per_shard=3), data())
        self.assertEqual(self.model.calls, [(0, 5), (0, 6), (0, 7)])
        self.assert_valid_shard(2, batches=[5, 6, 7], ids=range(20, 30))
        self.assert_read_equals(self.folder, self.ids, self.expected)
        self.assertTrue(read_predictions(self.folder).complete)
        self.assertEqual(json.loads((self.folder / f"{RANK}.manifest.json").read_text())["resumed_batches"], 5)

    def test_killed_run_shard_without_manifest_is_deleted_and_predicted_again(self) -> None:
        predict(self.model, ParquetPredictionWriter(self.folder, batches_per_shard=3), data())
        (self.folder / f"{RANK}.manifest.json").unlink()  # killed after shard 2 was renamed, before its manifest
        (self.folder / shard_name(2).replace(".parquet", ".manifest.json")).unlink()
        (self.folder / f"{TEMP_PREFIX}999-{shard_name(3)}").write_bytes(b"PAR1")  # and an open shard it lost
        with self.assertWarnsRegex(UserWarning, rf"{shard_name(2)} has no manifest.*deleting it"):
            predict(self.model, ParquetPredictionWriter(self.folder, batches_per_shard=3), data())
        self.assertEqual(self.model.calls, [(0, 6), (0, 7)])
        self.assertEqual(sorted(path.name for path in self.folder.glob("*.parquet")),
                         [shard_name(0), shard_name(1), shard_name(3)])
        self.assertEqual([path.name for path in self.folder.iterdir() if path.name.startswith(TEMP_PREFIX)], [])
        self.assertEqual(shard_manifest(self.folder, 3)["batches"], [6, 7])
        self.assert_read_equals(self.folder, self.ids, self.expected)


class TestEmptyDataset(QuietLightning, unittest.TestCase):
    """Lightning skips the predict loop, and every hook after ``setup`` with it, when there is no batch; the
    writers finish their output in ``teardown`` instead."""

    def test_zero_row_shard_with_the_id_columns(self) -> None:
        folder = temporary_folder(self)
        predict(probe_model(), ParquetPredictionWriter(folder), PredictionDataModule(num_samples=0))
        table = pq.read_table(folder / shard_name(0))
        self.assertEqual((table.num_rows, table.column_names), (0, ["sample_id", "batch_idx"]))
        manifest = shard_manifest(folder, 0)
        self.assertEqual((manifest["rows"], manifest["min_sample_id"], manifest["batches"], manifest["complete"]),
                         (0, None, [], True))
        self.assertEqual(manifest["crc32"], f"{zlib.crc32((folder / shard_name(0)).read_bytes()):08x}")
        manifest = json.loads((folder / f"{RANK}.manifest.json").read_text())
        self.assertEqual(manifest["dataloaders"], {"0": {"num_samples": 0, "batches_written": 0}})
        result = read_predictions(folder)
        self.assertEqual((result.sample_ids.tolist(), result.predictions, result.complete), ([], {}, True))


if __name__ == "__main__":
    unittest.main()
