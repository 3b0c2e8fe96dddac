"""Ground truth, outside the kit: the Hugging Face Trainer reference recipe resumes exactly.

Each run is a fresh process of ``python -m reference_models.hf_trainer`` (the Trainer alone, no kit): (a) 10
uninterrupted steps; (b) 4 steps, the Trainer's checkpoint, exit; (c) a new process resuming from ``checkpoint-4`` to
step 10, across the epoch boundary after step 8. Every logged loss and the final weights must be bit-identical. The
negative control resumes with ``ignore_data_skip=True``: its losses after the resume must differ, which shows the
comparison can fail.
"""

from __future__ import annotations

from tests.hf_support import require_transformers

require_transformers()

import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
STEPS, STOP = 10, 4


def _train(folder: Path, name: str, *options: str) -> dict[str, Any]:
    """One script-mode run in a fresh process; its logged losses by step and its final weights."""
    record = folder / f"{name}.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "reference_models.hf_trainer", "--output-dir", str(folder / name),
                           "--max-steps", str(STEPS), "--record", str(record), *options],
                          check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"run {name!r} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return torch.load(record, weights_only=True)


class TestHFTrainerResumesExactly(unittest.TestCase):
    runs: dict[str, dict[str, Any]]

    @classmethod
    def setUpClass(cls) -> None:
        folder = Path(tempfile.mkdtemp())
        checkpoint = str(folder / "interrupted" / f"checkpoint-{STOP}")
        cls.runs = {"straight": _train(folder, "straight"),
                    "interrupted": _train(folder, "interrupted", "--stop-after", str(STOP))}
        cls.runs["resumed"] = _train(folder, "resumed", "--resume", checkpoint)
        cls.runs["no_skip"] = _train(folder, "no_skip", "--resume", checkpoint, "--ignore-data-skip")

    def test_the_interrupted_run_stops_after_its_checkpoint(self) -> None:
        self.assertEqual(sorted(self.runs["interrupted"]["losses"]), list(range(1, STOP + 1)))

    def test_every_loss_and_the_final_weights_are_bit_identical(self) -> None:
        straight, resumed = self.runs["straight"], self.runs["resumed"]
        self.assertEqual(sorted(resumed["losses"]), list(range(STOP + 1, STEPS + 1)))
        for run in ("interrupted", "resumed"):
            for step, loss in self.runs[run]["losses"].items():
                self.assertEqual(loss, straight["losses"][step], f"{run} run, step {step}")
        for name, weight in straight["weights"].items():
            self.assertTrue(torch.equal(weight, resumed["weights"][name]), name)

    def test_the_negative_control_differs(self) -> None:
        straight, no_skip = self.runs["straight"], self.runs["no_skip"]
        self.assertNotEqual(no_skip["losses"][STOP + 1], straight["losses"][STOP + 1])


if __name__ == "__main__":
    unittest.main()
