"""Parquet files written page by page for the kit's shards, with the CRC-32 of every byte computed as it is written.

Why not pyarrow's writer: it copies every page into a buffer of its own before writing it, and the shard's CRC then
had to be read back from disk; together that ran at 0.47-0.68x of a raw append of the same bytes. Here a batch's
prediction bytes go from the tensor to the file in one vectored write, and the checksum is taken from memory on the
way. Samples are ``DELTA_LENGTH_BYTE_ARRAY`` values: all lengths first (a few bytes, since they are equal), then the
samples' bytes back to back, which for a batch is the tensor itself. pyarrow still reads the shards: the footer
carries pyarrow's own description of the schema (``ARROW:schema``), so they read back with the same Arrow types and
metadata as a file pyarrow wrote.

What is written: "PAR1"; per row group, each column's data pages (version 1 pages, uncompressed, RLE/bit-packed
levels); then the footer (thrift ``FileMetaData``), its length, and "PAR1". Three kinds of column, the ones the
shards use: :class:`Int64Column` (PLAIN), :class:`RowsColumn` (``large_binary`` in Arrow: equal-sized rows back to
back) and :class:`ShapeColumn` (``list<int32>``: the same list in every row, PLAIN). Every column is optional
(nullable), as pyarrow makes columns by default, and holds no nulls.
"""

from __future__ import annotations

import base64
import functools
import importlib.metadata
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from conformance._append import AppendFile
from conformance.predictions.formats._tensors import crc32
from conformance.predictions.formats._thrift import Field, encode_struct, varint

__all__ = ["PAGE_BYTES", "Int64Column", "ParquetFileWriter", "RowsColumn", "ShapeColumn"]

MAGIC = b"PAR1"
#: The most value bytes in one data page (a row larger than this gets a page of its own).
PAGE_BYTES = 64 << 20
#: Consecutive parts smaller than this (headers, levels, small columns) are joined before they are written.
_JOIN_BELOW = 64 << 10
_MAX_PAGE = (1 << 31) - 1  # page sizes are thrift i32

_INT32, _INT64, _BYTE_ARRAY = 1, 2, 6  # parquet physical types
_OPTIONAL, _REPEATED = 1, 2  # repetition types
_PLAIN, _RLE, _DELTA_LENGTH_BYTE_ARRAY = 0, 3, 6  # encodings
_DATA_PAGE, _LIST = 0, 3  # page type, converted type
_LENGTH = struct.Struct("<I")


def _hybrid_levels(levels: np.ndarray, bit_width: int) -> bytes:
    """Levels in parquet's RLE/bit-packed hybrid, with the 4-byte length prefix of version 1 pages: one run when
    every level is the same, else bit-packed groups of eight."""
    if len(levels) and (levels == levels[0]).all():
        run = varint(len(levels) << 1) + int(levels[0]).to_bytes((bit_width + 7) // 8, "little")
    else:
        groups = (len(levels) + 7) // 8
        padded = np.zeros(groups * 8, dtype=np.uint8)
        padded[:len(levels)] = levels
        bits = (padded[:, None] >> np.arange(bit_width, dtype=np.uint8)) & 1
        run = varint(groups << 1 | 1) + np.packbits(bits.reshape(-1), bitorder="little").tobytes()
    return _LENGTH.pack(len(run)) + run


@functools.lru_cache(maxsize=256)
def _present(count: int) -> bytes:
    """Definition levels of ``count`` values of a flat optional column, none of them null."""
    return _hybrid_levels(np.ones(count, dtype=np.uint8), 1)


def _equal_lengths(count: int, length: int) -> bytes:
    """``count`` (>= 1) equal lengths in ``DELTA_BINARY_PACKED``: the header (blocks of 128 values in 4 miniblocks,
    the count, the first length), then per block of deltas a zero minimum delta and four zero bit widths."""
    blocks = (count - 1 + 127) // 128
    return varint(128) + varint(4) + varint(count) + varint(length << 1) + bytes(5 * blocks)


def _page(num_values: int, body: list[Any], encoding: int = _PLAIN) -> list[Any]:
    """A data page: its header, then ``body`` (levels and values in ``encoding``)."""
    size = sum(memoryview(part).nbytes for part in body)
    if size > _MAX_PAGE:
        raise ValueError(f"a parquet page holds at most {_MAX_PAGE} bytes, this one needs {size}")
    header = encode_struct([
        (1, "i32", _DATA_PAGE), (2, "i32", size), (3, "i32", size),
        (5, "struct", [(1, "i32", num_values), (2, "i32", encoding), (3, "i32", _RLE), (4, "i32", _RLE)]),
    ])
    return [header, *body]


@dataclass(frozen=True)
class _Pages:
    """One column's pages in one row group, ready to append."""

    parts: list[Any]
    num_values: int  # level entries, as parquet counts values
    statistics: list[Field] | None = None
    encoding: int = _PLAIN


class _Column:
    """A column kind: its schema elements, leaf path and physical type."""

    physical_type: ClassVar[int]

    @classmethod
    def schema_elements(cls, name: str) -> list[list[Field]]:
        """The column's schema elements, depth first (a flat column has one, its leaf)."""
        return [[(1, "i32", cls.physical_type), (3, "i32", _OPTIONAL), (4, "binary", name)]]

    @staticmethod
    def leaf_path(name: str) -> list[str]:
        """The names from the schema's root to the column's leaf."""
        return [name]

    def pages(self) -> _Pages:
        """The column's values in one row group, as data pages."""
        raise NotImplementedError


@dataclass(frozen=True)
class Int64Column(_Column):
    """int64 values, with their minimum and maximum as statistics."""

    values: np.ndarray
    physical_type: ClassVar[int] = _INT64

    def pages(self) -> _Pages:
        values = np.ascontiguousarray(self.values, dtype="<i8")
        if not len(values):
            return _Pages([], 0)
        low, high = (int(values.min()).to_bytes(8, "little", signed=True),
                     int(values.max()).to_bytes(8, "little", signed=True))
        statistics = [(3, "i64", 0), (5, "binary", high), (6, "binary", low), (7, "bool", True), (8, "bool", True)]
        return _Pages(_page(len(values), [_present(len(values)), values.tobytes()]), len(values), statistics)


@dataclass(frozen=True)
class RowsColumn(_Column):
    """``rows`` values of ``row_bytes`` bytes each, back to back in ``data`` (``large_binary`` in Arrow)."""

    data: memoryview
    rows: int
    row_bytes: int
    physical_type: ClassVar[int] = _BYTE_ARRAY

    def pages(self) -> _Pages:
        if self.row_bytes > _MAX_PAGE - 64:
            raise ValueError(f"a sample of {self.row_bytes} bytes is larger than a parquet value can be (2 GiB)")
        per_page, parts = max(1, PAGE_BYTES // max(1, self.row_bytes)), []
        for first in range(0, self.rows, per_page):
            count = min(per_page, self.rows - first)
            values = self.data[first * self.row_bytes:(first + count) * self.row_bytes]
            body = [_present(count), _equal_lengths(count, self.row_bytes), values]
            parts += _page(count, body, _DELTA_LENGTH_BYTE_ARRAY)
        return _Pages(parts, self.rows, encoding=_DELTA_LENGTH_BYTE_ARRAY)


@dataclass(frozen=True)
class ShapeColumn(_Column):
    """The list ``shape`` (int32) in each of ``rows`` rows (``list<int32>`` in Arrow)."""

    shape: tuple[int, ...]
    rows: int
    physical_type: ClassVar[int] = _INT32

    @classmethod
    def schema_elements(cls, name: str) -> list[list[Field]]:
        return [
            [(3, "i32", _OPTIONAL), (4, "binary", name), (5, "i32", 1), (6, "i32", _LIST),
             (10, "struct", [(3, "struct", [])])],  # logical type LIST
            [(3, "i32", _REPEATED), (4, "binary", "list"), (5, "i32", 1)],
            [(1, "i32", _INT32), (3, "i32", _OPTIONAL), (4, "binary", "element")],
        ]

    @staticmethod
    def leaf_path(name: str) -> list[str]:
        return [name, "list", "element"]

    def pages(self) -> _Pages:
        return _shape_pages(self.shape, self.rows)


@functools.lru_cache(maxsize=64)
def _shape_pages(shape: tuple[int, ...], rows: int) -> _Pages:
    """The pages of a :class:`ShapeColumn` (the same for every batch of a shape and size)."""
    if not rows:
        return _Pages([], 0)
    if not shape:  # an empty list per row: one level entry each, list present but empty, no values
        levels = rows
        body = [_hybrid_levels(np.zeros(levels, dtype=np.uint8), 1), _hybrid_levels(np.ones(levels, np.uint8), 2)]
    else:  # a row's first element starts a new list (repetition 0), the others continue it (1)
        levels = rows * len(shape)
        repetition = np.tile(np.array([0] + [1] * (len(shape) - 1), dtype=np.uint8), rows)
        body = [_hybrid_levels(repetition, 1), _hybrid_levels(np.full(levels, 3, dtype=np.uint8), 2),
                np.tile(np.array(shape, dtype="<i4"), rows).tobytes()]
    return _Pages([b"".join(_page(levels, body))], levels)


def _created_by() -> str:
    """The footer's name of the writer, as parquet asks: "<application> version <version>"."""
    try:
        return f"conformance version {importlib.metadata.version('conformance')}"
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "conformance"


_KINDS: dict[str, type[_Column]] = {"int64": Int64Column, "large_binary": RowsColumn, "list<item: int32>": ShapeColumn}


class ParquetFileWriter:
    """A parquet file of the Arrow ``schema`` (int64, large_binary and list<int32> fields), written one row group at
    a time; :meth:`close` writes the footer and returns the CRC-32 of the whole file."""

    def __init__(self, path: Path, schema: Any) -> None:
        unknown = [field.name for field in schema if str(field.type) not in _KINDS]
        if unknown:
            raise ValueError(f"columns {unknown} have types this parquet writer does not write")
        self.schema = schema
        self._kinds = [_KINDS[str(field.type)] for field in schema]
        self._file = AppendFile(path)
        self._row_groups: list[list[Field]] = []
        self._checksum = 0
        self.rows = 0
        self._append([MAGIC])

    def write_row_group(self, columns: list[_Column], rows: int) -> None:
        """One row group of ``rows`` rows: ``columns`` in schema order."""
        kinds = [type(column) for column in columns]
        if kinds != self._kinds:
            raise TypeError(f"row group columns {[kind.__name__ for kind in kinds]} do not match the schema's "
                            f"{[kind.__name__ for kind in self._kinds]}")
        chunks, parts, offset = [], [], self._file.size
        start = offset
        for field, column in zip(self.schema, columns, strict=True):
            pages = column.pages()
            size = sum(memoryview(part).nbytes for part in pages.parts)
            chunks.append([(2, "i64", 0), (3, "struct", [
                (1, "i32", column.physical_type), (2, "list:i32", [pages.encoding, _RLE]),
                (3, "list:binary", column.leaf_path(field.name)), (4, "i32", 0), (5, "i64", pages.num_values),
                (6, "i64", size), (7, "i64", size), (9, "i64", offset if pages.parts else 0),
                (12, "struct", pages.statistics),
            ])])
            parts += pages.parts
            offset += size
        self._append(_joined(parts))
        self._row_groups.append([(1, "list:struct", chunks), (2, "i64", offset - start), (3, "i64", rows),
                                 (5, "i64", start), (6, "i64", offset - start)])
        self.rows += rows

    def close(self, *, fsync: bool = False) -> str:
        """Write the footer and close the file (``fsync``: flushed to the device first); returns the file's CRC-32
        as 8 hex digits."""
        metadata = {b"ARROW:schema": base64.b64encode(self.schema.serialize().to_pybytes()),
                    **(self.schema.metadata or {})}
        elements = [[(4, "binary", "schema"), (5, "i32", len(self.schema))]]
        for field, kind in zip(self.schema, self._kinds, strict=True):
            elements += kind.schema_elements(field.name)
        footer = encode_struct([
            (1, "i32", 1), (2, "list:struct", elements), (3, "i64", self.rows), (4, "list:struct", self._row_groups),
            (5, "list:struct", [[(1, "binary", key), (2, "binary", value)] for key, value in metadata.items()]),
            (6, "binary", _created_by()),
            (7, "list:struct", [[(1, "struct", [])] for _ in self._kinds]),
        ])
        self._append([footer, _LENGTH.pack(len(footer)), MAGIC])
        self._file.flush(fsync=fsync)
        self._file.close()
        return f"{self._checksum:08x}"

    def _append(self, parts: list[Any]) -> None:
        for part in parts:
            self._checksum = crc32(part, self._checksum)
        self._file.write_vectored(parts)


def _joined(parts: list[Any]) -> list[Any]:
    """``parts`` with each run of consecutive small parts joined into one."""
    out: list[Any] = []
    small: list[Any] = []
    for part in parts:
        if memoryview(part).nbytes < _JOIN_BELOW:
            small.append(part)
            continue
        if small:
            out.append(b"".join(small))
            small = []
        out.append(part)
    if small:
        out.append(b"".join(small))
    return out
