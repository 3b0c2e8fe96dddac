"""Names of prediction files: built and parsed back, BioNeMo's names, and names no writer makes refused."""

from __future__ import annotations

import unittest
from pathlib import Path

from conformance.predictions.file_names import PredictionFile, file_name, is_subdir, parse_file_name, subdir_name


class TestPredictionFileNames(unittest.TestCase):
    def test_bionemo_names(self) -> None:
        self.assertEqual(file_name(PredictionFile(3, 1, ".pt", batch_idx=12)),
                         "predictions__rank_3__dp_rank_1__batch_12.pt")
        self.assertEqual(file_name(PredictionFile(0, 0, ".pt")), "predictions__rank_0__dp_rank_0.pt")

    def test_round_trips_and_kinds(self) -> None:
        cases = {
            PredictionFile(0, 0, ".pt", batch_idx=0): "batch",
            PredictionFile(7, 3, ".safetensors", dataloader_idx=1, batch_idx=1234567): "batch",
            PredictionFile(2, 2, ".pt"): "epoch",
            PredictionFile(2, 2, ".safetensors", dataloader_idx=0): "epoch",
            PredictionFile(1, 0, ".parquet", shard=10): "shard",
            PredictionFile(1, 0, ".parquet", dataloader_idx=2, shard=0): "shard",
            PredictionFile(1, 0, ".manifest.json", shard=10): "shard_manifest",
            PredictionFile(1, 0, ".manifest.json"): "rank_manifest",
        }
        for file, kind in cases.items():
            with self.subTest(file=file):
                name = file_name(file)
                self.assertEqual(parse_file_name(Path("some/folder") / name), file)
                self.assertEqual(file.kind, kind)

    def test_other_names_are_refused(self) -> None:
        for name in [
            "predictions__rank_00__dp_rank_0.pt",  # leading zeros would make two names for one file
            "predictions__rank_0__dp_rank_0__batch_01.pt",
            "predictions__rank_0__dp_rank_0__dataloader_00__batch_1.pt",
            "predictions__rank_0__dp_rank_0__batch_1.npz",
            "predictions__rank_0__dp_rank_0__batch_-1.pt",
            "predictions__rank_0__batch_1.pt",
            "predictions_rank_0_dp_rank_0.pt",
            "predictions__rank_0__dp_rank_0__batch_1.pt.bak",
            "predictions__rank_0__dp_rank_0__batch_1__shard_0.parquet",
            "predictions__rank_0__dp_rank_0__batch_1.parquet",  # kinds and suffixes no writer combines
            "predictions__rank_0__dp_rank_0__shard_1.pt",
            "predictions__rank_0__dp_rank_0__batch_1.manifest.json",
            "predictions__rank_0__dp_rank_0.parquet",
            "predictions__rank_0__dp_rank_0__dataloader_1.manifest.json",
            ".tmp-123-predictions__rank_0__dp_rank_0.pt",
            "subdir_0",
        ]:
            with self.subTest(name=name):
                self.assertIsNone(parse_file_name(Path(name)))

    def test_subdirs(self) -> None:
        self.assertEqual([subdir_name(batch, 3) for batch in (0, 2, 3, 7)],
                         ["subdir_0", "subdir_0", "subdir_1", "subdir_2"])
        self.assertEqual(subdir_name(5, 1), "subdir_5")
        self.assertTrue(is_subdir(Path("out/subdir_12")))
        for name in ("subdir_", "subdir_x", "subdir_1_old", "Subdir_1"):
            with self.subTest(name=name):
                self.assertFalse(is_subdir(Path(name)))


if __name__ == "__main__":
    unittest.main()
