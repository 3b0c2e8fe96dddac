"""Appending with disk blocks reserved ahead: the file's size shows only what was written, and nothing reserved
stays behind once the file is closed."""

from __future__ import annotations

import os
import tempfile
import unittest
import unittest.mock
from pathlib import Path

from conformance import _append
from conformance._append import AppendFile
from conformance.predictions.atomic import atomic_write


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


@unittest.skipIf(_append._FALLOCATE is None, "this OS has no fallocate: nothing is reserved")
class TestReservedAppends(unittest.TestCase):
    def setUp(self) -> None:
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        self.path = Path(folder.name) / "log"

    def test_reserved_blocks_are_beyond_the_size_and_given_back_on_close(self) -> None:
        appended = AppendFile(self.path)
        offsets = [appended.write([b"a" * 3000]), appended.write([b"b" * 5000, memoryview(b"c" * 100)])]
        appended.flush()
        self.assertEqual((offsets, self.path.stat().st_size), ([0, 3000], 8100))
        self.assertLess(allocated(self.path), 64 << 10, "a small file is not worth reserving for")
        self.assertEqual(appended.write([bytes(2 << 20)]), 8100)
        appended.flush()
        self.assertEqual(self.path.stat().st_size, 8100 + (2 << 20))
        self.assertGreaterEqual(allocated(self.path), 4 << 20)  # as much again reserved ahead
        appended.close()
        self.assertLess(allocated(self.path), (2 << 20) + (64 << 10))
        self.assertEqual(self.path.read_bytes()[:8100], b"a" * 3000 + b"b" * 5000 + b"c" * 100)
        again = AppendFile(self.path)  # reopened: appends after what is there
        self.assertEqual(again.write([b"d"]), 8100 + (2 << 20))
        again.close()

    def test_an_atomic_write_keeps_only_what_it_wrote(self) -> None:
        with atomic_write(self.path, size_hint=4 << 20) as stream:
            stream.write(b"x" * 1000)
        self.assertEqual(self.path.read_bytes(), b"x" * 1000)
        self.assertLess(allocated(self.path), 64 << 10)



class TestVectoredAppends(unittest.TestCase):
    def setUp(self) -> None:
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        self.path = Path(folder.name) / "log"

    def test_vectored_parts_land_after_buffered_ones_in_order(self) -> None:
        appended = AppendFile(self.path)
        self.assertEqual(appended.write([b"head"]), 0)  # still in the buffer when the vectored write comes
        parts = [b"a" * 10, memoryview(bytearray(b"b" * 3000)), b"", bytes(range(256)) * 8]
        self.assertEqual(appended.write_vectored(parts), 4)
        self.assertEqual(appended.write([b"tail"]), 4 + 10 + 3000 + 2048)
        appended.close()
        self.assertEqual(self.path.read_bytes(), b"head" + b"a" * 10 + b"b" * 3000 + bytes(range(256)) * 8 + b"tail")

    def test_a_short_write_is_continued_where_it_stopped(self) -> None:
        real_writev = os.writev
        calls = []

        def at_most_7_bytes(fd: int, views: list[memoryview]) -> int:
            calls.append(len(views))
            joined = b"".join(bytes(view) for view in views)[:7]
            return real_writev(fd, [joined])

        appended = AppendFile(self.path)
        with unittest.mock.patch.object(_append.os, "writev", at_most_7_bytes):
            appended.write_vectored([b"abcde", b"fghijklmnop", b"qrstuvwxyz"])
        appended.close()
        self.assertEqual(self.path.read_bytes(), b"abcdefghijklmnopqrstuvwxyz")
        self.assertEqual(len(calls), 4)  # 26 bytes, 7 at a time
