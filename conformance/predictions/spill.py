"""A journaled, append-only spill of prediction batches on disk, from which an epoch file is made.

Each batch's tensor bytes are appended to ``data.bin``, except those of one *leading* key per dataloader (the
writer picks it, the largest usually), which go to ``leading_{dataloader_idx}.bin`` after a hole that the epoch file's
format reserves for what precedes that data. Then one JSON line describing the batch is appended to
``journal.jsonl``: the commit record. After a kill, :meth:`BatchSpill.recover` keeps the batches whose line is
complete and whose bytes are all there, and cuts the files back to their end, so a resumed run continues the spill.

At the end, when the leading key's collation is its batches back to back (batch dim 0, nothing padded), the leading
file becomes the epoch file (:meth:`BatchSpill.leading_file`): those bytes, most of the file, are written once.
Otherwise, and for the other keys, the epoch file is streamed from the spill (:meth:`BatchSpill.collated_entries`).
Memory holds only the journal (shapes and sample ids), never the tensors.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from conformance._append import AppendFile
from conformance.predictions.collate import CollationDims, Pad, Segment, collation_plan
from conformance.predictions.formats import TensorEntry, tensor_bytes, tensor_entry
from conformance.predictions.formats._tensors import crc32

__all__ = ["BatchSpill", "LeadingFile", "SpilledBatch"]

_READ_CHUNK = 8 << 20


@dataclass(frozen=True)
class SpilledBatch:
    """Where one batch's tensors lie: ``{key: (dtype, shape, offset)}`` in ``data.bin``, or in the dataloader's
    leading file for the ``leading`` key; its ids; the sizes of both files after it and the leading data's CRC-32."""

    batch_idx: int
    dataloader_idx: int
    kind: str
    tensors: dict[str, tuple[str, tuple[int, ...], int]]
    sample_ids: list[int]
    end: int  # data.bin size after this batch
    leading: str | None = None
    leading_end: int = 0  # the leading file's size after this batch
    leading_crc32: int = 0  # of the leading file's data (after its hole) up to this batch

    def to_json(self) -> str:
        return json.dumps({"batch_idx": self.batch_idx, "dataloader_idx": self.dataloader_idx, "kind": self.kind,
                           "tensors": self.tensors, "sample_ids": self.sample_ids, "end": self.end,
                           "leading": self.leading, "leading_end": self.leading_end,
                           "leading_crc32": self.leading_crc32})

    @classmethod
    def from_json(cls, line: str) -> SpilledBatch:
        raw = json.loads(line)
        tensors = {key: (dtype, tuple(shape), offset) for key, (dtype, shape, offset) in raw["tensors"].items()}
        return cls(raw["batch_idx"], raw["dataloader_idx"], raw["kind"], tensors, raw["sample_ids"], raw["end"],
                   raw["leading"], raw["leading_end"], raw["leading_crc32"])

    def nbytes(self, key: str) -> int:
        dtype, shape, _ = self.tensors[key]
        return TensorEntry(key, getattr(torch, dtype), shape, ()).nbytes


@dataclass(frozen=True)
class LeadingFile:
    """A leading file that holds the epoch file's entry ``index`` after a hole of ``hole`` bytes, up to ``end``."""

    path: Path
    index: int
    hole: int
    end: int
    crc32: int


class BatchSpill:
    """The spill of one writing rank, in ``folder`` (created on first use)."""

    def __init__(self, folder: Path, *, fsync: bool = False) -> None:
        self.folder = folder
        self.fsync = fsync
        self.batches: list[SpilledBatch] = []
        self._first: dict[int, SpilledBatch] = {}
        self._last: dict[int, SpilledBatch] = {}
        self._data: AppendFile | None = None
        self._journal: AppendFile | None = None
        self._leading: dict[int, AppendFile] = {}

    def recover(self) -> list[SpilledBatch]:
        """Load the committed batches of an earlier run and drop any uncommitted tail."""
        self.close()
        self.batches, self._first, self._last = [], {}, {}
        journal = self.folder / "journal.jsonl"
        if journal.exists():
            sizes = {path.name: path.stat().st_size for path in self.folder.iterdir()}
            for line in journal.read_bytes().split(b"\n"):
                try:
                    batch = SpilledBatch.from_json(line.decode())
                except (ValueError, KeyError, UnicodeDecodeError):
                    break  # a torn last line: that batch never committed
                if batch.end > sizes.get("data.bin", 0) or batch.leading_end > sizes.get(
                        self._leading_path(batch.dataloader_idx).name, 0):
                    break  # its bytes are gone (a kill after the leading file became the epoch file)
                self._commit(batch)
            journal.write_bytes(b"".join(batch.to_json().encode() + b"\n" for batch in self.batches))
            self._truncate(self.folder / "data.bin", self.batches[-1].end if self.batches else 0)
            for dataloader_idx in {path.name.removeprefix("leading_").removesuffix(".bin")
                                   for path in self.folder.glob("leading_*.bin")}:
                last = self._last.get(int(dataloader_idx))
                self._truncate(self._leading_path(int(dataloader_idx)), last.leading_end if last else 0)
        return list(self.batches)

    def append(self, batch_idx: int, dataloader_idx: int, kind: str, tensors: dict[str, torch.Tensor],
               sample_ids: list[int], leading: tuple[str, int] | None = None) -> None:
        """Spill one batch; it is committed when this returns.

        ``leading`` = (key, hole): on a dataloader's first batch, the key whose bytes go to its leading file, after a
        hole of that many bytes; later batches of the dataloader follow the first.
        """
        first = self._first.get(dataloader_idx)
        key, hole = (first.leading, 0) if first is not None else leading or (None, 0)
        data, journal = self._open()
        layout, leading_end, leading_crc = {}, 0, 0
        for name, tensor in tensors.items():
            dtype, shape = str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape)
            stream = self._leading_stream(dataloader_idx, hole) if name == key else data
            content = tensor_bytes(tensor)
            layout[name] = (dtype, shape, stream.write([content]))
            if name == key:
                last = self._last.get(dataloader_idx)
                leading_crc = crc32(content, last.leading_crc32 if last is not None else 0)
                leading_end = stream.size
        for stream in [data, *([self._leading[dataloader_idx]] if key is not None else [])]:
            stream.flush(fsync=self.fsync)
        batch = SpilledBatch(batch_idx, dataloader_idx, kind, layout, sample_ids, data.size, key, leading_end,
                             leading_crc)
        journal.write([batch.to_json().encode() + b"\n"])
        journal.flush(fsync=self.fsync)
        self._commit(batch)

    def first(self, dataloader_idx: int) -> SpilledBatch | None:
        """The first spilled batch of a dataloader, whose keys, dtypes and kind every later one must have."""
        return self._first.get(dataloader_idx)

    def collated_entries(self, batches: list[SpilledBatch], dims: CollationDims,
                         pad_value: float) -> list[TensorEntry]:
        """Entries that stream the collation of ``batches`` from disk, plus per-row ``batch_idx``/``sample_ids``."""
        for stream in (self._data, *self._leading.values()):
            if stream is not None:
                stream.flush()
        entries = []
        for key, (dtype_name, _, _) in batches[0].tensors.items():
            dtype = getattr(torch, dtype_name)
            itemsize = torch.empty((), dtype=dtype).element_size()
            parts = [batch.tensors[key] for batch in batches]
            shape, plan = collation_plan(key, [part[1] for part in parts], dims, itemsize)
            starts = [part[2] for part in parts]
            path = self._leading_path(batches[0].dataloader_idx) if key == batches[0].leading else self.folder / (
                "data.bin")
            entries.append(TensorEntry(key, dtype, shape, self._stream(path, plan, starts, dtype, pad_value)))
        rows = [len(batch.sample_ids) for batch in batches]
        batch_of_row = torch.repeat_interleave(torch.tensor([b.batch_idx for b in batches]), torch.tensor(rows))
        entries.append(tensor_entry("batch_idx", batch_of_row.to(torch.int64)))
        entries.append(tensor_entry("sample_ids", torch.tensor([i for b in batches for i in b.sample_ids],
                                                               dtype=torch.int64)))
        return entries

    def leading_file(self, batches: list[SpilledBatch], dims: CollationDims) -> LeadingFile | None:
        """The leading file of ``batches`` (one dataloader's, in batch order) when it holds the collation of the
        leading key, closed so it can be completed and renamed; None when it does not (or there is none)."""
        key = batches[0].leading
        if key is None:
            return None
        dtype = getattr(torch, batches[0].tensors[key][0])
        sizes = [batch.nbytes(key) for batch in batches]
        _, plan = collation_plan(key, [batch.tensors[key][1] for batch in batches], dims,
                                 torch.empty((), dtype=dtype).element_size())
        if plan != [Segment(index, 0, size) for index, size in enumerate(sizes) if size]:
            return None  # padded, or not along dim 0
        hole = batches[0].tensors[key][2]
        if any(batch.tensors[key][2] != hole + sum(sizes[:index]) for index, batch in enumerate(batches)):
            return None  # not in batch order in the file
        last = batches[-1]
        if last != self._last[last.dataloader_idx]:
            return None  # the file holds more than these batches
        self.close()
        index = list(batches[0].tensors).index(key)
        return LeadingFile(self._leading_path(last.dataloader_idx), index, hole, last.leading_end, last.leading_crc32)

    def _stream(self, path: Path, plan: list[Any], starts: list[int], dtype: torch.dtype,
                pad_value: float) -> Iterator[Any]:
        itemsize = torch.empty((), dtype=dtype).element_size()
        largest_pad = max((piece.length for piece in plan if isinstance(piece, Pad)), default=0)
        pad_chunk = tensor_bytes(torch.full((min(largest_pad, _READ_CHUNK) // itemsize,), pad_value, dtype=dtype))
        buffer = bytearray(_READ_CHUNK)
        with open(path, "rb") as data:
            for piece in plan:
                remaining = piece.length
                if not isinstance(piece, Pad):
                    data.seek(starts[piece.part] + piece.offset)
                while remaining:
                    size = min(remaining, _READ_CHUNK)
                    if isinstance(piece, Pad):
                        yield pad_chunk[:size]
                    else:
                        view = memoryview(buffer)[:size]
                        if data.readinto(view) != size:
                            raise OSError(f"{path} is shorter than its journal says")
                        yield view
                    remaining -= size

    def _commit(self, batch: SpilledBatch) -> None:
        self.batches.append(batch)
        self._first.setdefault(batch.dataloader_idx, batch)
        self._last[batch.dataloader_idx] = batch

    def _leading_path(self, dataloader_idx: int) -> Path:
        return self.folder / f"leading_{dataloader_idx}.bin"

    def _leading_stream(self, dataloader_idx: int, hole: int) -> AppendFile:
        """The dataloader's leading file, open for appending; a new one starts with ``hole`` zero bytes."""
        if dataloader_idx not in self._leading:
            self._leading[dataloader_idx] = AppendFile(self._leading_path(dataloader_idx))
            if self._leading[dataloader_idx].size == 0:
                self._leading[dataloader_idx].write([bytes(hole)])
        return self._leading[dataloader_idx]

    def _open(self) -> tuple[AppendFile, AppendFile]:
        if self._data is None or self._journal is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._data = AppendFile(self.folder / "data.bin")
            self._journal = AppendFile(self.folder / "journal.jsonl")
        return self._data, self._journal

    @staticmethod
    def _truncate(path: Path, size: int) -> None:
        if path.exists():
            with open(path, "r+b") as stream:
                stream.truncate(size)

    def close(self) -> None:
        for stream in (self._data, self._journal, *self._leading.values()):
            if stream is not None:
                stream.close()
        self._data = self._journal = None
        self._leading = {}

    def remove(self) -> None:
        """Delete the spill (after its epoch file is written)."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.batches, self._first, self._last = [], {}, {}
