"""The outside trainer of ``tests/outside_attached_trainer.py``: ground truth without the kit, then the kit's verdicts.

``TestGroundTruth`` runs the trainer's own command line in fresh processes: (1) 10 straight steps; (2) the same
10-step schedule stopped after its save at step 4; (3) a new process restoring that checkpoint and going on to
step 10. The losses of steps 5..10 (every micro-batch), the sample indices, the learning rates, the validation
losses and the final weights must be bit-identical to the straight run. A stop at step 6 (the last step of the first
epoch) checks the epoch boundary, and 2 ranks over gloo (torchelastic-style environment, DDP) check the distributed
path. The negative control resumes without restoring the RNG states: its losses must differ.

The two stop-and-go classes adopt the kit's attached mode (``AttachedRun``): one rank crashed, and 2 ranks killed.
Found with them (kit at ab37551, since fixed): test_checkpoint_contents failed both, because the kit read only the
DCP content of ``step_4/`` and skipped every other file inside a DCP folder, here the trainer's ``extra_rank<r>.pt``
(a weights-only ``torch.save`` file holding the scheduler, ``step``, the loader state and the RNG), which the ground
truth above shows is the checkpoint that resumes bit-exactly. The kit now passes every applicable check.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from typing import Any

import torch

from conformance import AttachedRun, StopAndGoConformance
from tests.outside_attached_trainer import Trainer, TrainerConfig
from tests.process_runs import wait_for_all

TRAINER = Path(__file__).with_name("outside_attached_trainer.py")
REPO_ROOT = TRAINER.parent.parent
STEPS, STOP, EPOCH_STOP = 10, 4, 6  # one rank: 48 samples / (4 x 2 accumulation) = 6 steps per epoch


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(args: list[str], ranks: int = 1) -> list[subprocess.Popen]:
    """Start one run of the trainer's command line, one process per rank (torchelastic-style environment)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    if ranks > 1:
        env.update(WORLD_SIZE=str(ranks), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    procs = []
    for rank in range(ranks):
        rank_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank)} if ranks > 1 else env
        procs.append(subprocess.Popen([sys.executable, str(TRAINER), *args], cwd=REPO_ROOT, env=rank_env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _run_all(runs: dict[str, tuple[list[str], int]]) -> None:
    """Run the runs concurrently; raise with the output of any process that fails."""
    wait_for_all({name: _launch(args, ranks) for name, (args, ranks) in runs.items()})


class TestGroundTruth(unittest.TestCase):
    """Stop-and-go of the trainer's own loop and checkpoints in separate processes, against a straight run."""

    runs: dict[str, dict[str, Any]]

    @classmethod
    def setUpClass(cls) -> None:
        cls._tmp = tempfile.TemporaryDirectory(prefix="outside-attached-")
        tmp = Path(cls._tmp.name)
        out = {name: tmp / f"{name}.pt" for name in
               ("straight", "stopped", "resumed", "epoch_stopped", "epoch_resumed", "no_rng",
                "straight2", "stopped2", "resumed2")}
        ckpt = {name: tmp / f"ckpt_{name}" for name in ("stop", "epoch", "stop2")}
        schedule = ["--schedule-steps", str(STEPS)]
        _run_all({
            "straight": (["--max-steps", str(STEPS), *schedule, "--out", str(out["straight"])], 1),
            "stopped": (["--max-steps", str(STOP), *schedule, "--save-at", str(STOP),
                         "--checkpoint-dir", str(ckpt["stop"]), "--out", str(out["stopped"])], 1),
            "epoch_stopped": (["--max-steps", str(EPOCH_STOP), *schedule, "--save-at", str(EPOCH_STOP),
                               "--checkpoint-dir", str(ckpt["epoch"]), "--out", str(out["epoch_stopped"])], 1),
            "straight2": (["--max-steps", str(STEPS), *schedule, "--out", str(out["straight2"])], 2),
            "stopped2": (["--max-steps", str(STOP), *schedule, "--save-at", str(STOP),
                          "--checkpoint-dir", str(ckpt["stop2"]), "--out", str(out["stopped2"])], 2),
        })
        _run_all({
            "resumed": (["--max-steps", str(STEPS), *schedule, "--restore-from", str(ckpt["stop"]),
                         "--out", str(out["resumed"])], 1),
            "epoch_resumed": (["--max-steps", str(STEPS), *schedule, "--restore-from", str(ckpt["epoch"]),
                               "--out", str(out["epoch_resumed"])], 1),
            "no_rng": (["--max-steps", str(STEPS), *schedule, "--restore-from", str(ckpt["stop"]),
                        "--no-restore-rng", "--out", str(out["no_rng"])], 1),
            "resumed2": (["--max-steps", str(STEPS), *schedule, "--restore-from", str(ckpt["stop2"]),
                          "--out", str(out["resumed2"])], 2),
        })
        cls.runs = {}
        for name, path in out.items():
            if name.endswith("2"):
                for rank in range(2):
                    cls.runs[f"{name}.rank{rank}"] = torch.load(path.with_name(f"{path.stem}.rank{rank}.pt"),
                                                                weights_only=True)
            else:
                cls.runs[name] = torch.load(path, weights_only=True)
        cls.ckpt = ckpt

    @classmethod
    def tearDownClass(cls) -> None:
        cls._tmp.cleanup()

    def assert_same_run(self, straight: str, parts: list[tuple[str, range]]) -> None:
        """Every step of the parts (name, steps) equals the straight run's bit for bit; the final weights too."""
        base = self.runs[straight]
        for name, steps in parts:
            run = self.runs[name]
            self.assertEqual(sorted(run["losses"]), list(steps), name)
            for step in steps:
                with self.subTest(run=name, step=step):
                    self.assertTrue(torch.equal(run["losses"][step], base["losses"][step]),
                                    f"{name} step {step}: {run['losses'][step]} != {base['losses'][step]}")
                    self.assertTrue(torch.equal(run["indices"][step], base["indices"][step]))
                    self.assertEqual(run["lrs"][step], base["lrs"][step])
            for step, value in run["eval"].items():
                self.assertEqual(value, base["eval"][step], f"{name} eval at step {step}")
        last = self.runs[parts[-1][0]]
        self.assertEqual(sorted(last["weights"]), sorted(base["weights"]))
        for key, value in base["weights"].items():
            self.assertTrue(torch.equal(last["weights"][key], value), f"final weight {key}")

    def test_stop_and_resume_is_bit_identical(self) -> None:
        self.assert_same_run("straight", [("stopped", range(1, STOP + 1)), ("resumed", range(STOP + 1, STEPS + 1))])
        self.assertEqual(sorted(self.runs["resumed"]["eval"]), [5, 10])

    def test_stop_at_the_epoch_boundary_is_bit_identical(self) -> None:
        self.assertEqual(self.runs["epoch_stopped"]["epoch"], 0)
        self.assertEqual(self.runs["straight"]["epoch"], 1)
        self.assert_same_run("straight", [("epoch_stopped", range(1, EPOCH_STOP + 1)),
                                          ("epoch_resumed", range(EPOCH_STOP + 1, STEPS + 1))])

    def test_two_ranks_stop_and_resume_is_bit_identical(self) -> None:
        for rank in range(2):
            self.assert_same_run(f"straight2.rank{rank}", [(f"stopped2.rank{rank}", range(1, STOP + 1)),
                                                           (f"resumed2.rank{rank}", range(STOP + 1, STEPS + 1))])
        self.assertFalse(torch.equal(self.runs["straight2.rank0"]["indices"][1],
                                     self.runs["straight2.rank1"]["indices"][1]), "ranks must see different data")

    def test_negative_control_without_rng_restore_differs(self) -> None:
        base, run = self.runs["straight"], self.runs["no_rng"]
        differing = [step for step in range(STOP + 1, STEPS + 1)
                     if not torch.equal(run["losses"][step], base["losses"][step])]
        self.assertEqual(differing, list(range(STOP + 1, STEPS + 1)), "every resumed loss must differ")
        # the data order and the schedule still resume: only the dropout masks differ
        for step in range(STOP + 1, STEPS + 1):
            self.assertTrue(torch.equal(run["indices"][step], base["indices"][step]))
            self.assertEqual(run["lrs"][step], base["lrs"][step])
        self.assertFalse(all(torch.equal(run["weights"][k], v) for k, v in base["weights"].items()))

    def test_checkpoint_layout(self) -> None:
        step_dir = self.ckpt["stop2"] / f"step_{STOP}"
        self.assertTrue((step_dir / ".metadata").is_file())
        for rank in range(2):
            extra = torch.load(step_dir / f"extra_rank{rank}.pt", weights_only=True)
            self.assertEqual(extra["step"], STOP)
            self.assertEqual(set(extra["rng"]), {"python", "numpy", "torch"})


def _train_attached(run: AttachedRun) -> None:
    """The trainer configured from the kit's run, its parts named to the kit, then its own loop."""
    trainer = Trainer(TrainerConfig(
        seed=run.seed, max_steps=run.max_steps, schedule_steps=run.num_steps,
        save_at_steps=() if run.save_step is None else (run.save_step,),
        checkpoint_dir=str(run.checkpoint_dir),
        restore_from=None if run.resume_from is None else str(run.resume_from)))
    run.watch(trainer.model, [trainer.optimizer], step=lambda: trainer.step, lr_schedulers=[trainer.scheduler],
              loader=trainer.train_loader, epoch=lambda: trainer.epoch, loss_module=trainer.loss_fn)
    trainer.train()


class TestOutsideAttachedStopAndGo(StopAndGoConformance, unittest.TestCase):
    """The kit's stop-and-go checks on one rank: uninterrupted 10 steps; crashed after the save at step 4; resumed."""

    num_steps, stop_step = STEPS, STOP

    @classmethod
    def run_training(cls, run: AttachedRun) -> None:
        _train_attached(run)


class TestOutsideAttachedTwoRanksKilled(StopAndGoConformance, unittest.TestCase):
    """The same on 2 ranks over gloo (DDP, DistributedSampler), the interrupted run killed."""

    num_steps, stop_step = STEPS, STOP
    num_ranks, interruption = 2, "kill"

    @classmethod
    def run_training(cls, run: AttachedRun) -> None:
        _train_attached(run)


if __name__ == "__main__":
    unittest.main()
