"""Without the kit: the attached backend's reference trainer resumes exactly. Three fresh processes (10 steps
straight; stopped after saving at step 4; resumed to step 10) give bit-identical losses of steps 5-10 and final
weights, and a resume restoring the RNG before the loader's new iterator draws from it does not (the comparison
can fail)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from typing import Any

import torch


def _train(output: Path, *arguments: str, trainer: str = "reference_models.attached_trainer:TinyTrainer"
           ) -> dict[str, Any]:
    module, name = trainer.split(":")
    program = (f"import sys; from reference_models.attached_trainer import main; from {module} import {name}; "
               f"main(sys.argv[1:], {name})")
    subprocess.run([sys.executable, "-c", program, str(output), *arguments], check=True,
                   cwd=Path(__file__).resolve().parents[1])
    return torch.load(output, weights_only=True)


def _identical(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[name], second[name]) for name in first)


class TestAttachedTrainerGroundTruth(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        folder = Path(tempfile.mkdtemp(prefix="attached-ground-truth-"))
        checkpoints = str(folder / "checkpoints")
        cls.straight = _train(folder / "straight.pt")
        _train(folder / "stopped.pt", "--max-steps", "4", "--save-at-step", "4", "--checkpoint-dir", checkpoints)
        cls.resumed = _train(folder / "resumed.pt", "--restore-from", checkpoints, "--checkpoint-dir",
                             str(folder / "unused"))
        cls.rng_first = _train(folder / "rng_first.pt", "--restore-from", checkpoints, "--checkpoint-dir",
                               str(folder / "unused"),
                               trainer="reference_models.mutants.attached_trainer:RNGRestoredBeforeIterTrainer")

    def test_resumed_losses_are_bit_identical(self) -> None:
        self.assertEqual(sorted(self.resumed["losses"]), [5, 6, 7, 8, 9, 10])
        self.assertEqual(self.resumed["losses"], {step: self.straight["losses"][step] for step in range(5, 11)})

    def test_final_weights_are_bit_identical(self) -> None:
        self.assertTrue(_identical(self.resumed["weights"], self.straight["weights"]))

    def test_the_comparison_can_fail(self) -> None:
        self.assertNotEqual(self.rng_first["losses"][6], self.straight["losses"][6])
        self.assertFalse(_identical(self.rng_first["weights"], self.straight["weights"]))


if __name__ == "__main__":
    unittest.main()
