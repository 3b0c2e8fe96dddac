"""The file formats: .pt files torch loads safely (and memory-maps), .safetensors files, each format's integrity
check, and the registry through which one new module adds a format to the writer, the reader and the checks."""

from __future__ import annotations

import io
import json
import struct
import tempfile
import unittest
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from conformance import PredictionWriter, read_predictions
from conformance.predictions import formats
from conformance.predictions.formats import (
    METADATA_KEY,
    TensorEntry,
    TensorFileFormat,
    tensor_bytes,
    tensor_entry,
    tensor_file_format,
)
from conformance.runs.lightning.predict import PredictLog
from conformance.suites._prediction_files import layout_problems, unsafe_file_problems
from reference_models.prediction_data import PredictionDataModule
from tests.predict_support import QuietLightning, in_id_order, predict, probe_model


def sample_tensors() -> dict[str, torch.Tensor]:
    """Every stored dtype, plus empty, scalar and non-contiguous tensors."""
    generator = torch.Generator().manual_seed(0)
    return {
        "f32": torch.randn(3, 5, generator=generator),
        "f64": torch.randn(2, 2, dtype=torch.float64, generator=generator),
        "f16": torch.randn(4, dtype=torch.float16, generator=generator),
        "bf16": torch.randn(2, 3, generator=generator).to(torch.bfloat16),
        "i64": torch.arange(7) - 3,
        "i32": torch.arange(6, dtype=torch.int32).reshape(2, 3),
        "i16": torch.tensor([-1, 2, 30000], dtype=torch.int16),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([[True, False], [False, True]]),
        "empty": torch.zeros(0, 4),
        "empty_long": torch.zeros(0, dtype=torch.int64),
        "scalar": torch.tensor(2.5),
        "transposed": torch.arange(12.0).reshape(3, 4).t(),
        "offset_view": torch.arange(10)[3:7],
    }


def temporary_folder(test: unittest.TestCase) -> Path:
    """A fresh folder, removed after ``test``."""
    folder = tempfile.TemporaryDirectory()
    test.addCleanup(folder.cleanup)
    return Path(folder.name)


def write(path: Path, file_format: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    with open(path, "wb") as stream:
        tensor_file_format(file_format).write(stream, [tensor_entry(key, value) for key, value in tensors.items()],
                          metadata)


def local_data_offsets(path: Path) -> dict[str, int]:
    """Where each zip record's data starts, read from its local file header (not the central directory)."""
    offsets = {}
    data = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            start = info.header_offset
            assert data[start:start + 4] == b"PK\x03\x04"
            name_length, extra_length = struct.unpack("<HH", data[start + 26:start + 30])
            offsets[info.filename] = start + 30 + name_length + extra_length
    return offsets


class TestPtFiles(unittest.TestCase):
    def setUp(self) -> None:
        self.folder = temporary_folder(self)
        self.tensors = sample_tensors()
        self.path = self.folder / "x.pt"
        write(self.path, "pt", self.tensors, {"kind": "dict", "note": "ünïcode"})

    def assert_same(self, loaded: dict, expected: dict[str, torch.Tensor]) -> None:
        self.assertEqual(set(loaded), set(expected))
        for key, tensor in expected.items():
            self.assertEqual(loaded[key].dtype, tensor.dtype, key)
            self.assertEqual(loaded[key].shape, tensor.shape, key)
            self.assertTrue(torch.equal(loaded[key], tensor), key)

    def test_loads_with_weights_only_and_round_trips_every_dtype(self) -> None:
        loaded = torch.load(self.path, weights_only=True)
        self.assertEqual(loaded.pop(METADATA_KEY), {"kind": "dict", "note": "ünïcode"})
        self.assert_same(loaded, self.tensors)
        self.assertTrue(loaded["transposed"].is_contiguous())

    def test_loads_memory_mapped(self) -> None:
        loaded = torch.load(self.path, weights_only=True, mmap=True)
        loaded.pop(METADATA_KEY)
        self.assert_same(loaded, self.tensors)

    def test_records_are_64_byte_aligned_and_crcs_valid(self) -> None:
        offsets = local_data_offsets(self.path)
        storages = [name for name in offsets if name.startswith("archive/data/")]
        self.assertEqual(len(storages), len(self.tensors))
        for name, offset in offsets.items():
            self.assertEqual(offset % 64, 0, name)
        with zipfile.ZipFile(self.path) as archive:
            self.assertIsNone(archive.testzip())
            self.assertEqual({info.compress_type for info in archive.infolist()}, {zipfile.ZIP_STORED})
            self.assertEqual(archive.read("archive/data/0"), bytes(tensor_bytes(self.tensors["f32"])))

    def test_identical_input_gives_identical_bytes(self) -> None:
        again = self.folder / "again.pt"
        write(again, "pt", sample_tensors(), {"kind": "dict", "note": "ünïcode"})
        self.assertEqual(again.read_bytes(), self.path.read_bytes())

    def test_empty_file_and_in_memory_stream(self) -> None:
        stream = io.BytesIO()
        tensor_file_format("pt").write(stream, [], {})
        stream.seek(0)
        self.assertEqual(torch.load(stream, weights_only=True), {METADATA_KEY: {}})

    def test_streamed_segments_concatenate(self) -> None:
        tensor = torch.arange(24, dtype=torch.float32).reshape(4, 6)
        data = bytes(tensor_bytes(tensor))
        segments = (data[start:start + 10] for start in range(0, len(data), 10))  # a one-shot generator
        path = self.folder / "streamed.pt"
        with open(path, "wb") as stream:
            tensor_file_format("pt").write(stream, [TensorEntry("x", torch.float32, (4, 6), segments)], {})
        self.assertTrue(torch.equal(torch.load(path, weights_only=True)["x"], tensor))


class TestSafetensorsFiles(unittest.TestCase):
    def setUp(self) -> None:
        self.folder = temporary_folder(self)

    def test_safe_open_reads_tensors_and_metadata(self) -> None:
        from safetensors import safe_open

        tensors = sample_tensors()
        path = self.folder / "x.safetensors"
        write(path, "safetensors", tensors, {"kind": "tensor", "pad_value": "0.0"})
        with safe_open(str(path), "pt") as stream:
            self.assertEqual(stream.metadata(), {"kind": "tensor", "pad_value": "0.0"})
            self.assertEqual(list(stream.keys()), sorted(tensors))
            for key, tensor in tensors.items():
                loaded = stream.get_tensor(key)
                self.assertEqual((loaded.dtype, loaded.shape), (tensor.dtype, tensor.shape), key)
                self.assertTrue(torch.equal(loaded, tensor), key)
        header_length = struct.unpack("<Q", path.read_bytes()[:8])[0]
        self.assertEqual(header_length % 8, 0)

    def test_no_metadata_and_identical_bytes(self) -> None:
        from safetensors.torch import load_file

        first, second = self.folder / "a.safetensors", self.folder / "b.safetensors"
        write(first, "safetensors", sample_tensors(), {})
        write(second, "safetensors", sample_tensors(), {})
        self.assertEqual(first.read_bytes(), second.read_bytes())
        self.assertEqual(set(load_file(str(first))), set(sample_tensors()))


class TestRefusals(unittest.TestCase):
    def test_streamed_segments_of_wrong_length_raise(self) -> None:
        for file_format in ("pt", "safetensors"):
            for data in (b"\0" * 12, b"\0" * 20):  # [4] float32 needs 16 bytes
                with self.subTest(file_format=file_format, length=len(data)):
                    entry = TensorEntry("x", torch.float32, (4,), [data[:8], data[8:]])
                    with self.assertRaisesRegex(ValueError, r"'x' of shape \(4,\) needs 16 bytes, got"):
                        tensor_file_format(file_format).write(io.BytesIO(), [entry], {})

    def test_unsupported_dtype_is_a_clear_type_error(self) -> None:
        tensor = torch.zeros(2, dtype=torch.complex64)
        with self.assertRaisesRegex(TypeError, r"'z' has dtype torch.complex64.*convert it to one of"):
            tensor_entry("z", tensor)
        for file_format in ("pt", "safetensors"):
            entry = TensorEntry("z", torch.complex64, (2,), [bytes(16)])
            with self.subTest(file_format=file_format), self.assertRaisesRegex(TypeError, "complex64"):
                tensor_file_format(file_format).write(io.BytesIO(), [entry], {})

    def test_unknown_format_raises(self) -> None:
        with self.assertRaisesRegex(ValueError, "choose one of"):
            tensor_file_format("npz").write(io.BytesIO(), [], {})


class NumpyArchiveFormat(TensorFileFormat):
    """A format as an adopter would add one: each tensor's bytes as a uint8 array in an ``.npz``, with a JSON
    header of names, dtypes, shapes and the metadata (numpy cannot hold bfloat16, so bytes it is)."""

    name = "npz"
    suffix = ".npz"

    def write_entries(self, stream: BinaryIO, entries: list[TensorEntry], metadata: Mapping[str, str]) -> None:
        arrays = {entry.name: np.frombuffer(b"".join(bytes(s) for s in entry.segments), np.uint8) for entry in entries}
        header = {"metadata": dict(metadata), "tensors": {e.name: [str(e.dtype), list(e.shape)] for e in entries}}
        np.savez(stream, __header__=np.array(json.dumps(header)), **arrays)

    def load_tensors(self, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(str(archive["__header__"]))
            tensors = {name: torch.frombuffer(bytearray(archive[name].tobytes()), dtype=getattr(torch, dtype.split(".")[1]))
                       .reshape(shape) for name, (dtype, shape) in header["tensors"].items()}
        return tensors, header["metadata"]

    def verify(self, path: Path) -> list[str]:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
        return [f"{path}: {damaged} is damaged"] if damaged else []


class TestRegistry(QuietLightning, unittest.TestCase):
    def test_one_registered_module_makes_a_format_writable_readable_and_checked(self) -> None:
        formats.register(NumpyArchiveFormat())
        self.addCleanup(formats._FORMATS.pop, "npz")
        folder = temporary_folder(self) / "job"
        for interval in ("batch", "epoch"):
            with self.subTest(interval=interval):
                written = folder / interval
                model = probe_model()
                predictions = predict(model, PredictionWriter(written, interval, format="npz"),
                                      PredictionDataModule(num_samples=10, ragged=True))
                self.assertTrue(any(path.suffix == ".npz" for path in written.iterdir()))
                ids, expected = in_id_order(predictions)
                result = read_predictions(written)
                self.assertTrue(torch.equal(result.sample_ids, ids))
                self.assertTrue(all(torch.equal(result.predictions[key], value) for key, value in expected.items()))
                computed = [batch for _, batch in model.calls] if interval == "batch" else []
                self.assertEqual(layout_problems(written, [PredictLog(rank=0, computed_batches=computed)]), [])
                self.assertEqual(unsafe_file_problems(written), [])

    def test_names_and_suffixes_are_unique(self) -> None:
        with self.assertRaisesRegex(ValueError, "clashes with the registered 'pt'"):
            formats.register(type("AnotherPt", (NumpyArchiveFormat,), {"name": "pt2", "suffix": ".pt"})())

    def test_pt_verify_finds_a_flipped_byte(self) -> None:
        path = temporary_folder(self) / "file.pt"
        write(path, "pt", {"x": torch.arange(64.0)}, {"kind": "dict"})
        self.assertEqual(tensor_file_format("pt").verify(path), [])
        data = bytearray(path.read_bytes())
        data[local_data_offsets(path)["archive/data/0"] + 5] ^= 0xFF
        path.write_bytes(bytes(data))
        self.assertIn("does not match its CRC-32", " ".join(tensor_file_format("pt").verify(path)))

    def test_safetensors_verify_finds_missing_bytes(self) -> None:
        path = temporary_folder(self) / "file.safetensors"
        write(path, "safetensors", {"x": torch.arange(64.0), "y": torch.ones(3)}, {"kind": "dict"})
        self.assertEqual(tensor_file_format("safetensors").verify(path), [])
        path.write_bytes(path.read_bytes()[:-4])
        self.assertIn("holds 264 data bytes, its header describes 268",
                      " ".join(tensor_file_format("safetensors").verify(path)))


if __name__ == "__main__":
    unittest.main()
