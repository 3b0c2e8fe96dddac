"""Files that grow by appending, with disk blocks reserved ahead of what is written.

On ext4 (this project's machines) appending 25 MB records ran at 3.3 GB/s into a growing file and at 5.4 GB/s into
blocks reserved ahead with Linux ``fallocate(FALLOC_FL_KEEP_SIZE)``, which allocates without changing the file's
size: readers still see only what was written. What is reserved beyond the end is given back when the file is
closed. Where the call is missing or refused (another OS, a file system without it, a full disk) nothing is
reserved and the writes proceed as they would have.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["AppendFile", "Reservation"]

_KEEP_SIZE = 0x01
_IOV_MAX = 1024  # the most parts one writev takes (Linux)
#: How far beyond what is about to be written to reserve: as much again as the file holds, within these bounds
#: (between writes, a file never holds more than 64 MiB of reserved, unwritten blocks).
_MIN_AHEAD, _MAX_AHEAD = 1 << 20, 64 << 20


def _load_fallocate() -> Any:
    name = ctypes.util.find_library("c")
    try:
        function = ctypes.CDLL(name, use_errno=True).fallocate if name else None
    except (OSError, AttributeError):
        return None
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        function.restype = ctypes.c_int
    return function


_FALLOCATE = _load_fallocate()


class Reservation:
    """Disk blocks reserved for the file open as ``fd``, ahead of where it is written."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.reserved = os.fstat(fd).st_size  # the end of what is allocated
        self.enabled = _FALLOCATE is not None
        self._reserved_any = False

    def cover(self, end: int, *, ahead: bool = True) -> None:
        """Make sure the bytes up to ``end`` lie in reserved blocks, reserving some way beyond it when they do not
        (``ahead``; else exactly to ``end``)."""
        if not self.enabled or end <= self.reserved or end < _MIN_AHEAD:
            return  # small files are not worth the calls
        until = end + min(max(end, _MIN_AHEAD), _MAX_AHEAD) if ahead else end
        if _FALLOCATE(self.fd, _KEEP_SIZE, self.reserved, until - self.reserved) != 0:
            self.enabled = False  # not supported here, or no room: write without reserving
        else:
            self.reserved, self._reserved_any = until, True

    def release(self) -> None:
        """Give back the blocks reserved beyond the file's end (truncating to its own size frees them); call it once
        everything is written and flushed."""
        if self._reserved_any and self.reserved > (size := os.fstat(self.fd).st_size):
            os.ftruncate(self.fd, size)
        self._reserved_any = False


class AppendFile:
    """A file opened for appending (created if needed) whose writes land in reserved blocks."""

    def __init__(self, path: Path) -> None:
        self.file: BinaryIO = open(path, "ab")  # noqa: SIM115 - open until close()
        self.size = self.file.tell()  # where the next bytes go
        self._reservation = Reservation(self.file.fileno())

    def write(self, parts: list[Any]) -> int:
        """Append the bytes-like ``parts``; returns the offset where they start."""
        start = self.size
        self.size += sum(memoryview(part).nbytes for part in parts)
        self._reservation.cover(self.size)
        self.file.writelines(parts)
        return start

    def write_vectored(self, parts: list[Any]) -> int:
        """Append the bytes-like ``parts`` straight from their memory, one system call per 1024 parts, bypassing the
        buffer (for a few large parts: nothing is copied); returns the offset where they start."""
        views = [memoryview(part).cast("B") for part in parts]
        start = self.size
        self.size += sum(view.nbytes for view in views)
        self._reservation.cover(self.size)
        self.file.flush()
        while views:
            written = os.writev(self.file.fileno(), views[:_IOV_MAX])
            while views and written >= views[0].nbytes:
                written -= views.pop(0).nbytes
            if views and written:  # a short write ended inside this part
                views[0] = views[0][written:]
        return start

    def flush(self, *, fsync: bool = False) -> None:
        """Hand what was written to the kernel (a killed process loses none of it); ``fsync``: to the device too."""
        self.file.flush()
        if fsync:
            os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.flush()
        self._reservation.release()
        self.file.close()
