"""atomic_write: the target appears complete or not at all, and no temporary file is left behind."""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

from conformance.predictions.atomic import TEMP_PREFIX, atomic_write, is_temporary


class TestAtomicWrite(unittest.TestCase):
    def setUp(self) -> None:
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        self.folder = Path(folder.name)

    def test_exception_leaves_no_target_and_no_temporary_file(self) -> None:
        target = self.folder / "sub" / "out.bin"
        with self.assertRaisesRegex(RuntimeError, "boom"), atomic_write(target) as stream:
            stream.write(b"partial")
            self.assertEqual([path.name[:len(TEMP_PREFIX)] for path in target.parent.iterdir()], [TEMP_PREFIX])
            raise RuntimeError("boom")
        self.assertFalse(target.exists())
        self.assertEqual(list(target.parent.iterdir()), [])

    def test_exception_keeps_an_existing_target(self) -> None:
        target = self.folder / "out.bin"
        target.write_bytes(b"old")
        with self.assertRaises(KeyboardInterrupt), atomic_write(target) as stream:
            stream.write(b"new")
            raise KeyboardInterrupt
        self.assertEqual(target.read_bytes(), b"old")
        self.assertEqual(list(self.folder.iterdir()), [target])

    def test_success_replaces_the_target(self) -> None:
        target = self.folder / "out.bin"
        target.write_bytes(b"old")
        for fsync in (False, True):
            with atomic_write(target, fsync=fsync) as stream:
                stream.write(b"new" + bytes([fsync]))
                self.assertEqual(target.read_bytes(), b"old" if not fsync else b"new\0")
            self.assertEqual(target.read_bytes(), b"new" + bytes([fsync]))
        self.assertEqual(list(self.folder.iterdir()), [target])

    def test_is_temporary(self) -> None:
        self.assertTrue(is_temporary(Path(f"{TEMP_PREFIX}12-predictions__rank_0__dp_rank_0.pt")))
        self.assertFalse(is_temporary(Path("predictions__rank_0__dp_rank_0.pt")))


if __name__ == "__main__":
    unittest.main()
