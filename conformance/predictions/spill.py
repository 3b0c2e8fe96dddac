"""A journaled, append-only spill of prediction batches on disk, from which an epoch file is streamed.

Each batch's tensor bytes are appended to ``data.bin``; then one JSON line describing them is appended to
``journal.jsonl``. The journal is the commit record: after a kill, :meth:`BatchSpill.recover` keeps the batches
whose line is complete and cuts ``data.bin`` back to their end, so a resumed run continues the same spill.
Memory holds only the journal (shapes and sample ids), never the tensors.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from conformance.predictions.collate import CollationDims, Pad, collation_plan
from conformance.predictions.formats import TensorEntry, tensor_bytes, tensor_entry

__all__ = ["BatchSpill", "SpilledBatch"]

_READ_CHUNK = 8 << 20


@dataclass(frozen=True)
class SpilledBatch:
    """Where one batch's tensors lie in ``data.bin``: ``{key: (dtype, shape, offset)}``, plus its ids."""

    batch_idx: int
    dataloader_idx: int
    kind: str
    tensors: dict[str, tuple[str, tuple[int, ...], int]]
    sample_ids: list[int]
    end: int  # data.bin size after this batch

    def to_json(self) -> str:
        return json.dumps({"batch_idx": self.batch_idx, "dataloader_idx": self.dataloader_idx, "kind": self.kind,
                           "tensors": self.tensors, "sample_ids": self.sample_ids, "end": self.end})

    @classmethod
    def from_json(cls, line: str) -> SpilledBatch:
        raw = json.loads(line)
        tensors = {key: (dtype, tuple(shape), offset) for key, (dtype, shape, offset) in raw["tensors"].items()}
        return cls(raw["batch_idx"], raw["dataloader_idx"], raw["kind"], tensors, raw["sample_ids"], raw["end"])


class BatchSpill:
    """The spill of one writing rank, in ``folder`` (created on first use)."""

    def __init__(self, folder: Path, *, fsync: bool = False) -> None:
        self.folder = folder
        self.fsync = fsync
        self.batches: list[SpilledBatch] = []
        self._first: dict[int, SpilledBatch] = {}
        self._data: BinaryIO | None = None
        self._journal: BinaryIO | None = None

    def recover(self) -> list[SpilledBatch]:
        """Load the committed batches of an earlier run and drop any uncommitted tail."""
        self.close()
        self.batches = []
        self._first = {}
        journal = self.folder / "journal.jsonl"
        if journal.exists():
            for line in journal.read_bytes().split(b"\n"):
                try:
                    self.batches.append(SpilledBatch.from_json(line.decode()))
                except (ValueError, KeyError, UnicodeDecodeError):
                    break  # a torn last line: that batch never committed
            for batch in self.batches:
                self._first.setdefault(batch.dataloader_idx, batch)
            committed = b"".join(batch.to_json().encode() + b"\n" for batch in self.batches)
            journal.write_bytes(committed)
            if (self.folder / "data.bin").exists():
                with open(self.folder / "data.bin", "r+b") as data:
                    data.truncate(self.batches[-1].end if self.batches else 0)
        return list(self.batches)

    def append(self, batch_idx: int, dataloader_idx: int, kind: str, tensors: dict[str, torch.Tensor],
               sample_ids: list[int]) -> None:
        """Spill one batch; it is committed when this returns."""
        data, journal = self._open()
        layout = {}
        for key, tensor in tensors.items():
            layout[key] = (str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape), data.tell())
            data.write(tensor_bytes(tensor))
        data.flush()
        if self.fsync:
            os.fsync(data.fileno())
        batch = SpilledBatch(batch_idx, dataloader_idx, kind, layout, sample_ids, data.tell())
        journal.write(batch.to_json().encode() + b"\n")
        journal.flush()
        if self.fsync:
            os.fsync(journal.fileno())
        self.batches.append(batch)
        self._first.setdefault(dataloader_idx, batch)

    def first(self, dataloader_idx: int) -> SpilledBatch | None:
        """The first spilled batch of a dataloader, whose keys, dtypes and kind every later one must have."""
        return self._first.get(dataloader_idx)

    def collated_entries(self, batches: list[SpilledBatch], dims: CollationDims,
                         pad_value: float) -> list[TensorEntry]:
        """Entries that stream the collation of ``batches`` from disk, plus per-row ``batch_idx``/``sample_ids``."""
        if self._data is not None:
            self._data.flush()
        entries = []
        for key, (dtype_name, _, _) in batches[0].tensors.items():
            dtype = getattr(torch, dtype_name)
            itemsize = torch.empty((), dtype=dtype).element_size()
            parts = [batch.tensors[key] for batch in batches]
            shape, plan = collation_plan(key, [part[1] for part in parts], dims, itemsize)
            starts = [part[2] for part in parts]
            entries.append(TensorEntry(key, dtype, shape, self._stream(plan, starts, dtype, pad_value)))
        rows = [len(batch.sample_ids) for batch in batches]
        batch_of_row = torch.repeat_interleave(torch.tensor([b.batch_idx for b in batches]), torch.tensor(rows))
        entries.append(tensor_entry("batch_idx", batch_of_row.to(torch.int64)))
        entries.append(tensor_entry("sample_ids", torch.tensor([i for b in batches for i in b.sample_ids],
                                                               dtype=torch.int64)))
        return entries

    def _stream(self, plan: list[Any], starts: list[int], dtype: torch.dtype, pad_value: float) -> Iterator[Any]:
        itemsize = torch.empty((), dtype=dtype).element_size()
        largest_pad = max((piece.length for piece in plan if isinstance(piece, Pad)), default=0)
        pad_chunk = tensor_bytes(torch.full((min(largest_pad, _READ_CHUNK) // itemsize,), pad_value, dtype=dtype))
        buffer = bytearray(_READ_CHUNK)
        with open(self.folder / "data.bin", "rb") as data:
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
                            raise OSError(f"{self.folder / 'data.bin'} is shorter than its journal says")
                        yield view
                    remaining -= size

    def _open(self) -> tuple[BinaryIO, BinaryIO]:
        if self._data is None or self._journal is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._data = open(self.folder / "data.bin", "ab")  # noqa: SIM115 - kept open across batches
            self._journal = open(self.folder / "journal.jsonl", "ab")  # noqa: SIM115
        return self._data, self._journal

    def close(self) -> None:
        for stream in (self._data, self._journal):
            if stream is not None:
                stream.close()
        self._data = self._journal = None

    def remove(self) -> None:
        """Delete the spill (after its epoch file is written)."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.batches = []
        self._first = {}
