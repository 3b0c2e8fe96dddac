"""`tox -e gpu` stops at once, saying why, on a machine where CUDA cannot run."""

from __future__ import annotations

import subprocess
import sys
import unittest

import torch


@unittest.skipIf(torch.cuda.is_available(), "this machine has CUDA; the preflight passes here")
class TestGPUPreflightWithoutCUDA(unittest.TestCase):
    def test_it_exits_1_with_one_clear_message(self) -> None:
        result = subprocess.run([sys.executable, "-m", "conformance.runs.gpu_preflight"], capture_output=True,
                                text=True, timeout=120, check=False)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        [line] = result.stderr.strip().splitlines()
        self.assertTrue(line.startswith("tox -e gpu cannot run here: torch "), line)
        self.assertIn("tox -e cpu,nemo", line)


if __name__ == "__main__":
    unittest.main()
