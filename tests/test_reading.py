"""read_predictions: every inconsistency of a prediction folder is an error that names what is wrong."""

from __future__ import annotations

import json
import shutil
import unittest
from pathlib import Path

import numpy as np
import torch

from conformance import PredictionReadError, PredictionWriter, read_predictions
from conformance.predictions.atomic import TEMP_PREFIX
from conformance.predictions.formats import tensor_entry, tensor_file_format
from conformance.predictions.reader import NoPredictionsFound
from reference_models.prediction_data import PredictionDataModule
from tests.predict_support import QuietLightning, in_id_order, predict, probe_model, temporary_folder

RANK = "predictions__rank_0__dp_rank_0"
MANIFEST = f"{RANK}.manifest.json"


class Foreign:
    """A class torch.load(weights_only=True) must not instantiate."""

    def __init__(self) -> None:
        self.payload = [1, 2]


class TestReadErrors(QuietLightning, unittest.TestCase):
    """Each test damages a copy of one finished job: batch files of 10 samples (batches 0, 1 and 2)."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.job = temporary_folder(cls) / "job"
        predictions = predict(probe_model(), PredictionWriter(cls.job), PredictionDataModule(num_samples=10))
        cls.ids, cls.expected = in_id_order(predictions)

    def setUp(self) -> None:
        self.folder = temporary_folder(self) / "job"
        shutil.copytree(self.job, self.folder)

    def batch(self, index: int, suffix: str = ".pt") -> Path:
        return self.folder / f"{RANK}__batch_{index}{suffix}"

    def assert_reads_as_written(self) -> None:
        result = read_predictions(self.folder)
        self.assertTrue(result.complete)
        self.assertTrue(torch.equal(result.sample_ids, self.ids))
        self.assertTrue(all(torch.equal(result.predictions[key], value) for key, value in self.expected.items()))

    def test_the_undamaged_job_reads(self) -> None:
        self.assert_reads_as_written()

    def test_missing_ids_are_listed(self) -> None:
        self.batch(1).unlink()
        with self.assertRaisesRegex(PredictionReadError, r"4 of 10 samples have no prediction: ids \[4, 5, 6, 7\]"):
            read_predictions(self.folder)
        partial = read_predictions(self.folder, allow_incomplete=True)
        self.assertEqual((partial.sample_ids.tolist(), partial.complete), ([0, 1, 2, 3, 8, 9], False))

    def test_duplicated_ids_are_named(self) -> None:
        shutil.copy(self.batch(0), self.batch(99))
        with self.assertRaisesRegex(PredictionReadError, r"sample ids \[0, 1, 2, 3\] \(4 in all\) were written more "
                                                         "than once"):
            read_predictions(self.folder)

    def test_ids_outside_the_dataset_are_named(self) -> None:
        manifest = json.loads((self.folder / MANIFEST).read_text())
        manifest["dataloaders"]["0"]["num_samples"] = 8
        (self.folder / MANIFEST).write_text(json.dumps(manifest))
        with self.assertRaisesRegex(PredictionReadError, r"sample ids \[8, 9\] .* outside the dataset of 8"):
            read_predictions(self.folder)

    def test_truncated_file_is_named(self) -> None:
        data = self.batch(2).read_bytes()
        self.batch(2).write_bytes(data[:len(data) // 2])
        with self.assertRaisesRegex(PredictionReadError, rf"cannot read .*{self.batch(2).name}.*truncated"):
            read_predictions(self.folder)

    def test_pickled_objects_are_refused(self) -> None:
        sample_ids = torch.tensor([8, 9])
        for name, content in [("numpy array", {"sample_ids": sample_ids, "x": np.zeros(2)}),
                              ("custom class", {"sample_ids": sample_ids, "x": Foreign()})]:
            with self.subTest(name):
                torch.save(content, self.batch(2))
                with self.assertRaisesRegex(PredictionReadError, rf"cannot read .*{self.batch(2).name}.*Weights only"):
                    read_predictions(self.folder)

    def test_foreign_content_is_refused(self) -> None:
        torch.save(torch.zeros(2), self.batch(2))
        with self.assertRaisesRegex(PredictionReadError, "holds a Tensor, not a dict of tensors"):
            read_predictions(self.folder)
        torch.save({"logits": torch.zeros(2, 16, 64)}, self.batch(2))
        with self.assertRaisesRegex(PredictionReadError, "no 'sample_ids' entry"):
            read_predictions(self.folder)

    def test_no_manifest_needs_allow_incomplete(self) -> None:
        (self.folder / MANIFEST).unlink()
        with self.assertRaisesRegex(PredictionReadError, "no rank manifest.*a custom writer must call "
                                    r"conformance\.write_rank_manifest.*pass allow_incomplete=True"):
            read_predictions(self.folder)
        result = read_predictions(self.folder, allow_incomplete=True)
        self.assertEqual((result.sample_ids.tolist(), result.complete), (list(range(10)), False))

    def test_unparseable_prediction_name_raises(self) -> None:
        for name in (f"{RANK}__batch_01.pt", f"{RANK}__batch_1.pt.bak", "predictions__final.pt"):
            with self.subTest(name=name):
                shutil.copy(self.batch(1), self.folder / name)
                with self.assertRaisesRegex(PredictionReadError, rf"no writer of the kit makes: {name}; move them"):
                    read_predictions(self.folder)
                (self.folder / name).unlink()

    def test_temporary_and_other_files_are_ignored(self) -> None:
        (self.folder / f"{TEMP_PREFIX}123-{RANK}__batch_3.pt").write_bytes(b"cut short")
        shutil.copy(self.batch(0), self.folder / f"{TEMP_PREFIX}123-{RANK}__batch_0.pt")
        (self.folder / "notes.txt").write_text("not a prediction")
        (self.folder / "old").mkdir()
        shutil.copy(self.batch(0), self.folder / "old" / self.batch(0).name)  # not a subdir_{n} folder
        self.assert_reads_as_written()

    def test_mixed_formats_of_one_rank_raise(self) -> None:
        loaded = torch.load(self.batch(2), weights_only=True)
        metadata = loaded.pop("__metadata__")
        self.batch(2).unlink()
        with open(self.batch(2, ".safetensors"), "wb") as stream:
            tensor_file_format("safetensors").write(stream, [tensor_entry(k, v) for k, v in loaded.items()], metadata)
        with self.assertRaisesRegex(PredictionReadError, r"rank 0 wrote \.pt, \.safetensors files.*one format"):
            read_predictions(self.folder)

    def test_mixed_kinds_raise(self) -> None:
        loaded = torch.load(self.batch(2), weights_only=True)
        loaded["__metadata__"]["kind"] = "tensor"
        torch.save(loaded, self.batch(2))
        with self.assertRaisesRegex(PredictionReadError, r"mixes prediction kinds: \S*batch_2.pt holds a tensor "
                                                         r"prediction, \S*batch_0.pt a dict one"):
            read_predictions(self.folder)

    def test_a_key_in_some_files_only_names_the_files(self) -> None:
        loaded = torch.load(self.batch(1), weights_only=True)
        loaded["extra"] = torch.zeros(4)
        torch.save(loaded, self.batch(1))
        with self.assertRaisesRegex(PredictionReadError, r"batch_1.pt holds keys \['extra', 'idx', 'logits'\] but "
                                                         r"\S*batch_0.pt holds \['idx', 'logits'\]"):
            read_predictions(self.folder)

    def test_a_non_tensor_value_is_a_read_error(self) -> None:
        loaded = torch.load(self.batch(1), weights_only=True)
        loaded["note"] = "hello"
        torch.save(loaded, self.batch(1))
        with self.assertRaisesRegex(PredictionReadError, r"entries that are not tensors: 'note' \(str\)"):
            read_predictions(self.folder)

    def test_a_manifest_without_a_required_key_is_a_read_error(self) -> None:
        for key in ("dp_size", "dataloaders"):
            with self.subTest(key=key):
                shutil.copy(self.job / MANIFEST, self.folder / MANIFEST)
                manifest = json.loads((self.folder / MANIFEST).read_text())
                del manifest[key]
                (self.folder / MANIFEST).write_text(json.dumps(manifest))
                with self.assertRaisesRegex(PredictionReadError, rf"lacks \['{key}'\]: a rank manifest needs"):
                    read_predictions(self.folder)

    def test_nothing_to_read_is_an_error_or_a_warning_when_incomplete_is_allowed(self) -> None:
        empty = self.folder / "empty"
        empty.mkdir()
        (self.folder / "other").mkdir()
        (self.folder / "other" / "results.csv").write_text("a,b\n")
        for folder, phrase in [(empty, "the job wrote nothing yet"), (self.folder / "other", "another tool's"),
                               (self.folder.parent, "its sub-folders job hold some: pass one of them")]:
            with self.subTest(folder=folder.name):
                with self.assertRaisesRegex(PredictionReadError, phrase):
                    read_predictions(folder)
                with self.assertWarnsRegex(NoPredictionsFound, phrase):
                    result = read_predictions(folder, allow_incomplete=True)
                self.assertEqual((len(result.sample_ids), result.complete), (0, False))

    def test_dataloader_the_job_did_not_have_raises(self) -> None:
        with self.assertRaisesRegex(PredictionReadError, r"no dataloader 1 \(its ranks predicted dataloaders \[0\]\)"):
            read_predictions(self.folder, dataloader_idx=1)

    def test_not_a_folder(self) -> None:
        with self.assertRaisesRegex(PredictionReadError, "is not a folder of predictions"):
            read_predictions(self.folder / "absent")


class TestSeedLayout(QuietLightning, unittest.TestCase):
    """Folders of the seed's writer: ``torch.save`` of the prediction dict plus ``batch_idx``, no manifest."""

    def setUp(self) -> None:
        self.folder = temporary_folder(self) / "seed"
        self.ids, self.expected = in_id_order(predict(probe_model(), PredictionWriter(temporary_folder(self)),
                                                      PredictionDataModule(num_samples=10)))

    def save(self, name: str, content: dict[str, torch.Tensor]) -> None:
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(content, path)

    def rows(self, start: int, stop: int) -> dict[str, torch.Tensor]:
        return {key: value[start:stop] for key, value in self.expected.items()}

    def assert_reads_with_a_warning(self) -> None:
        with self.assertWarnsRegex(UserWarning, "cannot be verified"):
            result = read_predictions(self.folder)
        self.assertFalse(result.complete)
        self.assertTrue(torch.equal(result.sample_ids, self.ids))
        self.assertTrue(all(torch.equal(result.predictions[key], value) for key, value in self.expected.items()))

    def test_batch_files_in_subdirs_are_read_by_their_idx_key(self) -> None:
        for batch, start in enumerate(range(0, 10, 4)):
            self.save(f"subdir_{batch // 2}/{RANK}__batch_{batch}.pt",
                      {**self.rows(start, start + 4), "batch_idx": torch.tensor([batch])})
        self.assert_reads_with_a_warning()

    def test_an_epoch_file_is_read_by_its_batch_indices(self) -> None:
        content = {key: value for key, value in self.rows(0, 10).items() if key != "idx"}
        self.save(f"{RANK}.pt", {**content, "batch_indices": self.ids, "batch_idx": torch.arange(3)})
        self.expected.pop("idx")
        self.assert_reads_with_a_warning()

    def test_files_without_a_recoverable_id_are_refused(self) -> None:
        self.save(f"{RANK}__batch_0.pt", {"logits": self.expected["logits"][:4], "batch_idx": torch.tensor([0])})
        with self.assertRaisesRegex(PredictionReadError, "no dataset index to recover them from"):
            read_predictions(self.folder)


class TestDataParallelRanks(QuietLightning, unittest.TestCase):
    """Two data-parallel ranks, as a distributed sampler pads them: rank 1 predicted sample 9 again."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.job = temporary_folder(cls) / "job"
        predict(probe_model(), PredictionWriter(cls.job), PredictionDataModule(num_samples=10))

    def setUp(self) -> None:
        self.folder = temporary_folder(self) / "job"
        shutil.copytree(self.job, self.folder)
        manifest = json.loads((self.folder / MANIFEST).read_text())
        (self.folder / MANIFEST).write_text(json.dumps({**manifest, "dp_size": 2}))
        self.rank_1_manifest = {**manifest, "dp_size": 2, "global_rank": 1, "dp_rank": 1}
        last = torch.load(self.folder / f"{RANK}__batch_2.pt", weights_only=True)  # samples 8 and 9
        self.metadata = last.pop("__metadata__")
        self.sample_9 = {key: value[1:] for key, value in last.items() if key != "batch_idx"}
        self.sample_9["batch_idx"] = torch.tensor([0])

    def write_rank_1(self, tensors: dict[str, torch.Tensor], *, finished: bool = True) -> None:
        with open(self.folder / "predictions__rank_1__dp_rank_1__batch_0.pt", "wb") as stream:
            tensor_file_format("pt").write(stream, [tensor_entry(k, v) for k, v in tensors.items()], self.metadata)
        if finished:
            (self.folder / "predictions__rank_1__dp_rank_1.manifest.json").write_text(json.dumps(self.rank_1_manifest))

    def test_identical_padding_duplicate_is_dropped(self) -> None:
        self.write_rank_1(self.sample_9)
        result = read_predictions(self.folder)
        self.assertEqual((result.sample_ids.tolist(), result.complete), (list(range(10)), True))

    def test_different_duplicate_raises(self) -> None:
        self.write_rank_1({**self.sample_9, "logits": self.sample_9["logits"] + 1})
        with self.assertRaisesRegex(PredictionReadError, "sample id 9 was written twice with different values"):
            read_predictions(self.folder)

    def test_unfinished_rank_raises(self) -> None:
        self.write_rank_1(self.sample_9, finished=False)
        with self.assertRaisesRegex(PredictionReadError, r"data-parallel ranks \[1\] of 2 did not finish"):
            read_predictions(self.folder)
        self.assertFalse(read_predictions(self.folder, allow_incomplete=True).complete)


if __name__ == "__main__":
    unittest.main()
