"""A write-only file whose writes happen on a background thread, for a producer that writes synchronously.

pyarrow's parquet writer copies each page into a Python ``bytes`` object for a Python file and waits for its
``write``; here ``write`` only queues the bytes, and a thread appends them (into reserved blocks, see
:mod:`conformance._append`) and computes the file's CRC-32 meanwhile, so encoding the next row group overlaps
writing this one and the finished file need not be read back for its checksum. At most ``max_pending`` writes wait
in the queue, so memory stays bounded. An error of the thread (a full disk) is raised by the next ``write`` or by
``close``.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

from conformance._append import AppendFile
from conformance.predictions.formats._tensors import crc32

__all__ = ["BackgroundFile"]


class BackgroundFile:
    """Writes a new file at ``path`` on a background thread; file-like enough for ``pyarrow.PythonFile``."""

    def __init__(self, path: Path, *, fsync: bool = False, max_pending: int = 4) -> None:
        path.unlink(missing_ok=True)  # a new file, whatever an earlier process left under this name
        self._file = AppendFile(path)
        self._fsync = fsync
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._position = 0
        self.crc32 = 0  # of everything written, once closed
        self.closed = False
        self._thread = threading.Thread(target=self._write_queued, name=f"write {path.name}", daemon=True)
        self._thread.start()

    def write(self, data: Any) -> int:
        self._raise_error()
        size = memoryview(data).nbytes
        self._queue.put(data)
        self._position += size
        return size

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        """Nothing to do: everything queued is written by :meth:`close` at the latest."""

    def close(self) -> None:
        """Wait until everything queued is written (with ``fsync``, to the device too), then close the file; a
        second call does nothing."""
        if self.closed:
            return
        self.closed = True
        self._queue.put(None)
        self._thread.join()
        try:
            self._raise_error()
            self._file.flush(fsync=self._fsync)
        finally:
            self._file.close()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def _write_queued(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain the queue so that a waiting write returns and raises
            try:
                self.crc32 = crc32(data, self.crc32)
                self._file.write([data])
            except BaseException as exc:  # noqa: BLE001 - handed to the writing thread
                self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            raise OSError(f"writing {self._file.file.name} failed: {self._error}") from self._error
