"""The kit's own parquet encoding: shards read back exactly as pyarrow's writer would have written the same batches,
in one page or many, and thrift's compact protocol bytes as the specification gives them."""

from __future__ import annotations

import shutil
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from conformance.predictions.collate import CollationDims
from conformance.predictions.formats import _parquet_file
from conformance.predictions.formats._parquet_file import Int64Column, ParquetFileWriter, RowsColumn
from conformance.predictions.formats._thrift import encode_struct
from conformance.predictions.formats.parquet import batch_columns, batch_schema, file_crc32

DIMS = CollationDims({"tokens": 1}, {})


def batch(rows: int, seed: int) -> dict[str, torch.Tensor]:
    """Keys of every kind the shards hold: float, bf16, bool and int samples; a scalar per sample; empty samples;
    a key whose batch dim is not the first."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "logits": torch.randn(rows, 3, 5, generator=generator),
        "half": torch.randn(rows, 7, generator=generator).to(torch.bfloat16),
        "mask": torch.rand(rows, 4, generator=generator) > 0.5,
        "loss": torch.randn(rows, generator=generator),
        "nothing": torch.zeros(rows, 0, 2),
        "tokens": torch.randint(0, 100, (6, rows), generator=generator),
    }


def pyarrow_table(tensors: dict[str, torch.Tensor], ids: torch.Tensor, batch_idx: int) -> pa.Table:
    """The same batch built the way pyarrow's writer would take it: a table of one row per sample."""
    rows = len(ids)
    columns = {"sample_id": pa.array(ids.numpy()), "batch_idx": pa.array(np.full(rows, batch_idx, dtype=np.int64))}
    for key, tensor in tensors.items():
        per_sample = tensor.movedim(DIMS.batch_dim(key), 0).contiguous()
        columns[key] = pa.array([row.reshape(-1).view(torch.uint8).numpy().tobytes() for row in per_sample],
                                pa.large_binary())
        columns[f"{key}__shape"] = pa.array([list(per_sample.shape[1:])] * rows, pa.list_(pa.int32()))
    return pa.table(columns)


class TestShardsReadAsPyarrowsOwn(unittest.TestCase):
    """Every row group written here reads back equal to pyarrow's writer's file of the same batches."""

    def folder(self) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="parquet-file-"))
        self.addCleanup(shutil.rmtree, folder)
        return folder

    def write_both(self, sizes: list[int]) -> tuple[Path, Path, str]:
        folder = self.folder()
        batches = [batch(rows, seed) for seed, rows in enumerate(sizes)]
        schema = batch_schema("dict", batches[0], 0, DIMS)
        ours, theirs = folder / "ours.parquet", folder / "theirs.parquet"
        writer = ParquetFileWriter(ours, schema)
        reference = pq.ParquetWriter(theirs, schema, compression="none", use_dictionary=False)
        first = 100
        for batch_idx, tensors in enumerate(batches):
            ids = torch.arange(first, first + sizes[batch_idx])
            writer.write_row_group(batch_columns(tensors, ids, batch_idx, DIMS), len(ids))
            reference.write_table(pyarrow_table(tensors, ids, batch_idx).replace_schema_metadata(schema.metadata),
                                  row_group_size=max(1, len(ids)))
            first += len(ids)
        reference.close()
        return ours, theirs, writer.close()

    def assert_same_content(self, ours: Path, theirs: Path) -> None:
        mine, reference = pq.ParquetFile(ours), pq.ParquetFile(theirs)
        self.assertTrue(mine.schema_arrow.equals(reference.schema_arrow, check_metadata=True))
        self.assertEqual(mine.num_row_groups, reference.num_row_groups)
        for group in range(mine.num_row_groups):
            self.assertTrue(mine.read_row_group(group).equals(reference.read_row_group(group)), f"row group {group}")

    def test_batches_of_every_size_read_back_as_pyarrows(self):
        # 129 and 130 rows cross the 128-length blocks of the delta-encoded sample lengths; 0 is an empty batch.
        ours, theirs, checksum = self.write_both([3, 0, 1, 129, 130])
        self.assert_same_content(ours, theirs)
        self.assertEqual(checksum, file_crc32(ours))

    def test_a_batch_larger_than_a_page_spans_several_pages(self):
        with mock.patch.object(_parquet_file, "PAGE_BYTES", 200):  # 60-byte logits: 3 samples a page
            ours, theirs, _ = self.write_both([10, 2])
        self.assert_same_content(ours, theirs)
        metadata = pq.ParquetFile(ours).metadata.row_group(0)
        logits = next(metadata.column(i) for i in range(metadata.num_columns)
                      if metadata.column(i).path_in_schema == "logits")
        self.assertGreater(logits.total_compressed_size, 4 * 10 * 15 + 4 * 25)  # values plus four page headers

    def test_sample_ids_carry_their_range_as_statistics(self):
        ours, _, _ = self.write_both([4, 3])
        statistics = [pq.ParquetFile(ours).metadata.row_group(group).column(0).statistics for group in (0, 1)]
        self.assertEqual([(s.min, s.max, s.null_count) for s in statistics], [(100, 103, 0), (104, 106, 0)])

    def test_an_empty_shard_has_its_schema_and_no_rows(self):
        path = self.folder() / "empty.parquet"
        schema = batch_schema("dict", batch(1, 0), 0, DIMS)
        checksum = ParquetFileWriter(path, schema).close()
        self.assertEqual(checksum, file_crc32(path))
        table = pq.read_table(path)
        self.assertEqual((table.num_rows, table.schema.names), (0, schema.names))

    def test_columns_must_match_the_schema(self):
        folder = self.folder()
        writer = ParquetFileWriter(folder / "x.parquet", pa.schema([("sample_id", pa.int64())]))
        with self.assertRaisesRegex(TypeError, "do not match the schema"):
            writer.write_row_group([RowsColumn(memoryview(b""), 0, 0)], 0)
        writer.close()
        with self.assertRaisesRegex(ValueError, "types this parquet writer does not write"):
            ParquetFileWriter(folder / "y.parquet", pa.schema([("text", pa.string())]))

    def test_a_sample_parquet_cannot_hold_is_refused(self):
        with self.assertRaisesRegex(ValueError, "larger than a parquet value can be"):
            RowsColumn(memoryview(b""), 1, 1 << 31).pages()
        self.assertEqual(Int64Column(np.zeros(0, dtype=np.int64)).pages().parts, [])


class TestThriftCompactProtocol(unittest.TestCase):
    """Byte sequences worked out by hand from the compact protocol's specification."""

    def test_field_headers_carry_the_id_delta_and_the_type(self):
        self.assertEqual(encode_struct([(1, "i32", 0), (2, "i32", 3), (4, "i64", -1)]),
                         bytes([0x15, 0x00, 0x15, 0x06, 0x26, 0x01, 0x00]))

    def test_a_jump_of_more_than_15_ids_writes_the_id_itself(self):
        self.assertEqual(encode_struct([(17, "i32", 1)]), bytes([0x05, 0x22, 0x02, 0x00]))

    def test_bools_live_in_the_type_nibble_and_none_is_left_out(self):
        self.assertEqual(encode_struct([(1, "bool", True), (2, "i32", None), (3, "bool", False)]),
                         bytes([0x11, 0x22, 0x00]))

    def test_lists_strings_and_nested_structs(self):
        self.assertEqual(encode_struct([(1, "list:i32", [1, 2]), (2, "binary", "ab"), (3, "struct", [(1, "i16", 5)])]),
                         bytes([0x19, 0x25, 0x02, 0x04, 0x18, 0x02, 0x61, 0x62, 0x1C, 0x14, 0x0A, 0x00, 0x00]))
        self.assertEqual(encode_struct([(1, "list:i32", [0] * 15)]), bytes([0x19, 0xF5, 0x0F, *[0] * 15, 0x00]))

    def test_varints_span_bytes_of_seven_bits(self):
        self.assertEqual(encode_struct([(1, "i64", 300)]), bytes([0x16, 0xD8, 0x04, 0x00]))

    def test_fields_out_of_order_are_refused(self):
        with self.assertRaisesRegex(ValueError, "increasing id order"):
            encode_struct([(2, "i32", 0), (1, "i32", 0)])


if __name__ == "__main__":
    unittest.main()
