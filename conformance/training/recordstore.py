"""Streams of records on disk, keyed by integer tuples; RAM holds at most the record being written or read.

A store is one append-only file of frames, every stream's: a 4-byte header length, a JSON header ``{"stream",
"key", "size", "shared"}``, then the record in :mod:`conformance.training.recordfile` format, starting 64-byte
aligned in the file. Creating a file per record would cost more than recording itself; a file per stream (45 per
stop-and-go class) cost 12-40 ms where creating a file takes 0.27 ms of kernel time or more.

A store may be given a *reference* store (the uninterrupted run's, for the interrupted and resumed runs): a large
record whose bytes are exactly those the reference holds under the same stream and key is written as a frame of
size 0 marked ``"shared"``, and reads back from the reference. Byte equality makes that exact, whatever a later
comparison's tolerance; it spares writing again the optimizer states and weights that a deterministic recipe
reproduces, the largest part of the bytes a stop-and-go class writes.
"""

from __future__ import annotations

import dataclasses
import json
import mmap
import os
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from conformance._append import AppendFile
from conformance.training import recordfile

__all__ = ["Key", "RecordStore", "to_record"]

Key = tuple[int, ...]

_FRAME_HEADER = struct.Struct("<I")
_ALIGNMENT = 64
#: Records at least this large are looked up in the reference store before being written (below it, comparing
#: costs more than writing), and are read from a memory map rather than into a buffer.
_SHARED_MIN_BYTES = _MAPPED_MIN_BYTES = 1 << 20
_REFERENCE_FILE = "reference.json"
#: Every stream's frames, in the order written: one file to create per store, not one per stream.
_LOG_FILE = "records.log"


@dataclasses.dataclass(frozen=True)
class _Frame:
    offset: int  # of the record in the stream's file
    size: int
    shared: bool  # the record is the reference store's


class RecordStore:
    """Streams of records under ``root``: ``write`` one record, ``keys``/``read`` them back.

    Keys must increase within a stream, so a record is never written twice. A large record is read from a private
    (copy-on-write) memory map of its bytes, whose tensors alias the page cache until something writes to them.
    """

    def __init__(self, root: str | os.PathLike, *, reference: RecordStore | None = None) -> None:
        self.root = Path(root)
        self._reference = reference
        self._last_key: dict[str, Key] = {}
        #: (bytes of the file indexed, where its frames end, stream -> key -> frame)
        self._indexed: tuple[int, int, dict[str, dict[Key, _Frame]]] = (0, 0, {})
        self._file: AppendFile | None = None
        self._path = os.path.join(self.root, _LOG_FILE)

    def write(self, stream: str, key: Key, value: Any) -> None:
        """Append ``value`` (see :func:`to_record` for what it may hold) as record ``key`` of ``stream``."""
        _check_key(key)
        last = self._last_key.get(stream)
        if last is not None and key <= last:
            raise ValueError(f"record {key} of stream '{stream}' written after record {last}: keys must increase")
        parts = recordfile.encode_parts_reusing(to_record(value))  # written below, before any other encoding
        size = sum(len(part) for part in parts)
        shared = size >= _SHARED_MIN_BYTES and self._reference_holds(stream, key, parts, size)
        log = self._log()
        header = (f'{{"stream": {json.dumps(stream)}, "key": [{", ".join(map(str, key))}], '
                  f'"size": {0 if shared else size}, "shared": {"true" if shared else "false"}}}').encode()
        header += b" " * (-(log.size + _FRAME_HEADER.size + len(header)) % _ALIGNMENT)
        log.write([_FRAME_HEADER.pack(len(header)), header, *([] if shared else parts)])
        log.flush()  # a killed process loses no record
        self._last_key[stream] = key

    def close(self) -> None:
        """Close the file written to (reading needs no close); a later write opens it again."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def keys(self, stream: str) -> list[Key]:
        """The keys recorded in ``stream``, sorted; empty if nothing was recorded."""
        return sorted(self._index(stream))

    def read(self, stream: str, key: Key) -> Any:
        """Load record ``key`` of ``stream``, tensors on the CPU; nothing is unpickled."""
        return recordfile.decode(self.record_bytes(stream, key))

    def items(self, stream: str) -> Iterator[tuple[Key, Any]]:
        """(key, value) for every record of ``stream`` in key order, loaded one at a time."""
        for key in self.keys(stream):
            yield key, self.read(stream, key)

    # --- files -------------------------------------------------------------------------------------------------
    def _log(self) -> AppendFile:
        if self._file is None:
            self.root.mkdir(parents=True, exist_ok=True)
            if self._reference is not None and not (self.root / _REFERENCE_FILE).exists():
                relative = os.path.relpath(self._reference.root, self.root)
                (self.root / _REFERENCE_FILE).write_text(json.dumps({"root": relative}))
            self._file = AppendFile(Path(self._path))
        return self._file

    def record_bytes(self, stream: str, key: Key) -> memoryview:
        """The encoded bytes of record ``key`` of ``stream`` (:func:`recordfile.decode` makes them its value): read
        from this store's file (a large record mapped on its own) or, when shared, from the reference store's."""
        index = self._index(stream)
        if key not in index:
            raise KeyError(f"stream '{stream}' has no record {key}")
        frame = index[key]
        if frame.shared:
            reference = self._reference_store()
            if reference is None:
                raise KeyError(f"record {key} of stream '{stream}' is shared with a reference store that is gone")
            return reference.record_bytes(stream, key)
        with open(self._path, "rb") as log:
            if frame.size < _MAPPED_MIN_BYTES:
                data = bytearray(frame.size)
                log.seek(frame.offset)
                log.readinto(data)
                return memoryview(data)
            # A private map of this record alone: unmapped once what was decoded from it is gone, so a reader's
            # memory stays flat however many records it reads; no fresh buffer to fill (which took most of a check's
            # time for large records)
            start = frame.offset - frame.offset % mmap.ALLOCATIONGRANULARITY
            mapped = mmap.mmap(log.fileno(), frame.offset + frame.size - start, access=mmap.ACCESS_COPY,
                               offset=start)
        return memoryview(mapped)[frame.offset - start:frame.offset - start + frame.size]

    def _reference_store(self) -> RecordStore | None:
        """The store shared records read from: the one given, else the one the store's folder names."""
        if self._reference is None and (self.root / _REFERENCE_FILE).exists():
            relative = json.loads((self.root / _REFERENCE_FILE).read_text())["root"]
            self._reference = RecordStore((self.root / relative).resolve())
        return self._reference

    def _reference_holds(self, stream: str, key: Key, parts: list[Any], size: int) -> bool:
        """Whether the reference store's record ``key`` of ``stream`` is exactly these bytes."""
        reference = self._reference
        if reference is None or key not in reference._index(stream):
            return False
        held = reference.record_bytes(stream, key)
        if held.nbytes != size:
            return False
        offset = 0
        for part in parts:
            length = len(part)
            if not recordfile.same_bytes(held[offset:offset + length], part):
                return False
            offset += length
        return True

    def _index(self, stream: str) -> dict[Key, _Frame]:
        """Where each record of ``stream`` lies; frames appended since the last look are indexed on from where
        that look ended (the file only grows)."""
        try:
            size = os.stat(self._path).st_size
        except FileNotFoundError:
            size = 0
        indexed, position, streams = self._indexed
        if size != indexed:
            if size < indexed:  # not this store's file any more (deleted, written anew): index it afresh
                position, streams = 0, {}
            if size:
                with open(self._path, "rb") as log:
                    while position + _FRAME_HEADER.size <= size:  # whole frames only: one may be half written
                        log.seek(position)
                        (header_size,) = _FRAME_HEADER.unpack(log.read(_FRAME_HEADER.size))
                        start = position + _FRAME_HEADER.size + header_size
                        if start > size:
                            break
                        header = json.loads(log.read(header_size))
                        if start + header["size"] > size:
                            break
                        frames = streams.setdefault(header["stream"], {})
                        frames[tuple(header["key"])] = _Frame(start, header["size"], header.get("shared", False))
                        position = start + header["size"]
            self._indexed = (size, position, streams)
        return streams.get(stream, {})


def _check_key(key: Key) -> None:
    if not isinstance(key, tuple) or not key or any(not isinstance(part, int) or part < 0 for part in key):
        raise ValueError(f"record keys are non-empty tuples of non-negative ints, got {key!r}")


def to_record(value: Any, path: str = "root") -> Any:
    """``value`` as plain dicts, lists, tuples, detached tensors and Python scalars (what a record may hold).

    Mappings become dicts, namedtuples and dataclasses dicts of their fields, numpy arrays tensors. Tensors are
    detached; a view is copied so that saving it does not write the whole storage it views. ``path`` names
    ``value`` in the error raised for what cannot be recorded.
    """
    return _to_record(value, (path,))


#: Where a value lies, spelled only for an error: ``(root,)``, or ``(parent, template, key)`` with the template
#: giving the step from the parent.
_Where = tuple[Any, ...]


def _to_record(value: Any, where: _Where) -> Any:
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()
        return tensor
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return value
    if type(value) is dict or isinstance(value, Mapping):
        return {key: _to_record(item, (where, "[{!r}]", key)) for key, item in value.items()}
    if type(value) is list:
        return [_to_record(item, (where, "[{}]", index)) for index, item in enumerate(value)]
    if isinstance(value, (np.ndarray, np.generic)):
        return torch.from_numpy(np.array(value))
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {field: _to_record(getattr(value, field), (where, ".{}", field)) for field in value._fields}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _to_record(getattr(value, field.name), (where, ".{}", field.name))
                for field in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_record(item, (where, "[{}]", index)) for index, item in enumerate(value))
    raise TypeError(
        f"cannot record {_spelled(where)}: a {type(value).__module__}.{type(value).__qualname__} is not a tensor, "
        "container or plain Python value; return tensors, dicts, lists or dataclasses from the recipe's steps and "
        "states"
    )


def _spelled(where: _Where) -> str:
    steps = []
    while len(where) == 3:
        where, template, key = where
        steps.append(template.format(key))
    return where[0] + "".join(reversed(steps))
