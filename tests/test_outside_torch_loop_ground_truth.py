"""Ground truth, outside the kit: the plain PyTorch recipe of ``tests/outside_torch_loop.py`` resumes exactly.

Every run is a fresh Python process in the recipe's script mode (its own loop, the recipe's parts and step function):
(a) 16 uninterrupted steps; (b) 7 steps, ``dcp.save``, exit; (c) fresh parts, ``dcp.load``, steps 8..16. The losses,
the sample indices of every batch, the validation losses and the final weights must be bit-identical. A second stop
after step 12 (the end of the first 12-batch epoch) checks the epoch boundary. Two negative controls run the same
processes with the RNG state not restored on resume, and restored before the loader iterator is made: their
resumed losses must differ, which shows the comparison can fail. No kit import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from typing import Any

import torch

from tests.process_runs import wait_for_all

RECIPE = Path(__file__).with_name("outside_torch_loop.py")
REPO_ROOT = RECIPE.parent.parent
STEPS, STOP, EPOCH_STOP = 16, 7, 12  # 96 samples / batch 8 = 12 batches per epoch


def _command(out: Path, rng: str = "carry", stop_after: int | None = None, save: Path | None = None,
             resume: Path | None = None) -> list[str]:
    """The recipe's script-mode command line of one run."""
    command = [sys.executable, str(RECIPE), "--steps", str(STEPS), "--out", str(out), "--rng", rng]
    if stop_after is not None:
        command += ["--stop-after", str(stop_after), "--save", str(save)]
    if resume is not None:
        command += ["--resume", str(resume)]
    return command


def _run_all(commands: dict[str, list[str]]) -> None:
    """Run the commands as concurrent processes; raise with the output of any that fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    wait_for_all({name: [subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True)]
                  for name, command in commands.items()})


class TestOutsideTorchLoopResumesExactly(unittest.TestCase):
    """Stop-and-go of the recipe's own loop in separate processes, against an uninterrupted run."""

    runs: dict[str, dict[str, Any]]

    @classmethod
    def setUpClass(cls) -> None:
        cls._tmp = tempfile.TemporaryDirectory(prefix="outside_torch_loop_")
        tmp = Path(cls._tmp.name)
        first, resumed = {}, {}
        # scenario name -> (rng mode, stop step); "carry" is the recipe, the other two modes are the negative controls
        scenarios = {"carry": ("carry", STOP), "epoch": ("carry", EPOCH_STOP), "skip": ("skip", STOP),
                     "early": ("early", STOP)}
        for name, (rng, stop) in scenarios.items():
            if name != "epoch":  # the epoch-boundary stop shares the recipe's uninterrupted run
                first[f"{name}_a"] = _command(tmp / f"{name}_a.pt", rng)
            first[f"{name}_b"] = _command(tmp / f"{name}_b.pt", rng, stop_after=stop, save=tmp / f"{name}_ckpt")
            resumed[f"{name}_c"] = _command(tmp / f"{name}_c.pt", rng, resume=tmp / f"{name}_ckpt")
        _run_all(first)
        _run_all(resumed)
        cls.runs = {path.stem: torch.load(path, weights_only=True) for path in tmp.glob("*.pt")}

    @classmethod
    def tearDownClass(cls) -> None:
        cls._tmp.cleanup()

    def assertSameWeights(self, left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> None:
        self.assertEqual(sorted(left), sorted(right))
        for key, value in left.items():
            self.assertTrue(torch.equal(value, right[key]), f"weights {key!r} differ")

    def assertResumedExactly(self, scenario: str, stop: int, uninterrupted: str) -> None:
        a, b, c = self.runs[uninterrupted], self.runs[f"{scenario}_b"], self.runs[f"{scenario}_c"]
        self.assertEqual(a["steps"], list(range(1, STEPS + 1)))
        self.assertEqual(b["steps"], list(range(1, stop + 1)))
        self.assertEqual(c["steps"], list(range(stop + 1, STEPS + 1)))
        # before the stop: the same run
        self.assertTrue(torch.equal(b["losses"], a["losses"][:stop]), (b["losses"], a["losses"]))
        self.assertTrue(torch.equal(b["indices"], a["indices"][:stop]))
        # after the resume: the same batches, bit-identical losses, validation and weights
        self.assertTrue(torch.equal(c["indices"], a["indices"][stop:]), "the resumed run sees other batches")
        self.assertTrue(torch.equal(c["losses"], a["losses"][stop:]),
                        f"resumed losses differ:\n{c['losses']}\n{a['losses'][stop:]}")
        self.assertEqual(b["val_steps"] + c["val_steps"], a["val_steps"])
        self.assertTrue(torch.equal(torch.cat([b["val_losses"], c["val_losses"]]), a["val_losses"]))
        self.assertSameWeights(c["model"], a["model"])

    def assertResumeDiverges(self, scenario: str) -> None:
        a, b, c = self.runs[f"{scenario}_a"], self.runs[f"{scenario}_b"], self.runs[f"{scenario}_c"]
        self.assertTrue(torch.equal(b["losses"], a["losses"][:STOP]), "the runs differ before the stop already")
        self.assertTrue(torch.equal(c["indices"], a["indices"][STOP:]), "the loader position is restored here")
        self.assertNotEqual(c["losses"][0].item(), a["losses"][STOP].item(), "the first resumed step should differ")
        self.assertFalse(torch.equal(c["losses"], a["losses"][STOP:]))
        self.assertFalse(all(torch.equal(c["model"][key], a["model"][key]) for key in a["model"]))

    def test_resume_is_bit_identical(self) -> None:
        self.assertResumedExactly("carry", STOP, "carry_a")

    def test_resume_at_the_epoch_boundary_is_bit_identical(self) -> None:
        self.assertResumedExactly("epoch", EPOCH_STOP, "carry_a")

    def test_negative_control_rng_not_restored(self) -> None:
        self.assertResumeDiverges("skip")

    def test_negative_control_rng_restored_before_the_iterator(self) -> None:
        self.assertResumeDiverges("early")


if __name__ == "__main__":
    unittest.main()
