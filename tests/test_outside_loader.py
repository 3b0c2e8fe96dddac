"""The outside loader recipe (``tests/outside_loader.py``): ground truth from its own script mode in fresh processes,
without the kit, then the kit's verdict on the same loader.

Ground truth: an uninterrupted 2-epoch run is the reference; runs stopped after a mid-epoch step and after the last
step of epoch 0, each resumed in a new process, must together draw exactly the reference's steps (ids, order and
epoch), with 0 and with 2 loader workers; two ranks must split every step of it; and a resume that does not load the
loader's state must be caught by the same comparison (the negative control).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests import outside_loader as recipe

SCRIPT = Path(recipe.__file__)
EPOCHS = 2
STEPS_PER_EPOCH = recipe.NUM_DOCUMENTS // recipe.GLOBAL_BATCH
MID_EPOCH_STOP = 3  # of 5 steps in epoch 0
END_OF_EPOCH_STOP = STEPS_PER_EPOCH  # the last step of epoch 0
WORKER_COUNTS = (0, 2)
NOT_APPLICABLE_CHECKS = frozenset({"test_validation_starts_at_first_sample", "test_state_restored_before_first_batch",
                                   "test_elastic_resume"})

Step = list[Any]  # [step (1-based), epoch, [sample ids]]


def first_difference(expected: list[Step], drawn: list[Step]) -> str | None:
    """None if ``drawn`` is ``expected`` step for step (number, epoch, ids in order), else the first difference."""
    for position, (want, got) in enumerate(zip(expected, drawn)):
        if want != got:
            return f"position {position}: drew {got}, the uninterrupted run {want}"
    if len(expected) != len(drawn):
        return f"drew {len(drawn)} steps, the uninterrupted run {len(expected)}"
    return None


class OutsideLoaderGroundTruth(unittest.TestCase):
    """Stop-and-resume of the script mode, in fresh processes, against its uninterrupted run."""

    folder: Path
    runs: dict[str, dict[str, Any]]
    seconds: float

    @classmethod
    def setUpClass(cls) -> None:
        """Run every script invocation the checks read: first the uninterrupted and stopped runs, then the resumes."""
        cls.folder = Path(tempfile.mkdtemp(prefix="outside-loader-"))
        started = time.perf_counter()
        first: dict[str, list[str]] = {}
        second: dict[str, list[str]] = {}
        for workers in WORKER_COUNTS:
            common = ["--num-workers", str(workers), "--epochs", str(EPOCHS)]
            first[f"whole{workers}"] = common
            for label, stop in (("mid", MID_EPOCH_STOP), ("end", END_OF_EPOCH_STOP)):
                checkpoint = str(cls.folder / f"{label}{workers}.ckpt")
                first[f"{label}{workers}-stopped"] = [*common, "--stop-after", str(stop), "--save", checkpoint]
                second[f"{label}{workers}-resumed"] = [*common, "--resume", checkpoint]
        for rank in (0, 1):
            first[f"rank{rank}"] = ["--rank", str(rank), "--world-size", "2", "--epochs", str(EPOCHS)]
        second["mid0-no-loader-state"] = [*second["mid0-resumed"], "--drop-loader-state"]
        cls.runs = {}
        try:
            with ThreadPoolExecutor(max_workers=3) as pool:
                for wave in (first, second):
                    cls.runs.update(zip(wave, pool.map(cls._run_script, wave, wave.values())))
        except BaseException:
            shutil.rmtree(cls.folder, ignore_errors=True)
            raise
        cls.seconds = time.perf_counter() - started

    @classmethod
    def tearDownClass(cls) -> None:
        """Remove the runs' checkpoints and records."""
        shutil.rmtree(cls.folder, ignore_errors=True)

    @classmethod
    def _run_script(cls, name: str, arguments: list[str]) -> dict[str, Any]:
        """The JSON record of one fresh ``python tests/outside_loader.py`` process; raises if it fails."""
        out = cls.folder / f"{name}.json"
        done = subprocess.run([sys.executable, str(SCRIPT), *arguments, "--out", str(out)], cwd=cls.folder,
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{name} exited with {done.returncode}:\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())

    def test_script_mode_does_not_import_the_kit(self) -> None:
        """No script run imports the conformance package."""
        self.assertEqual([name for name, run in self.runs.items() if run["imported_kit"]], [])

    def test_reference_is_a_sound_two_epoch_stream(self) -> None:
        """The reference has 5 full batches per epoch, each epoch distinct samples, the epochs in different orders,
        and is the same with 0 and 2 workers."""
        whole = self.runs["whole0"]["steps"]
        self.assertEqual([step for step, _, _ in whole], list(range(1, EPOCHS * STEPS_PER_EPOCH + 1)))
        self.assertEqual([epoch for _, epoch, _ in whole], [e for e in range(EPOCHS) for _ in range(STEPS_PER_EPOCH)])
        orders = [[i for _, epoch, ids in whole if epoch == e for i in ids] for e in range(EPOCHS)]
        for order in orders:
            self.assertEqual(len(order), STEPS_PER_EPOCH * recipe.GLOBAL_BATCH)
            self.assertEqual(len(set(order)), len(order))
            self.assertTrue(set(order) <= set(range(recipe.NUM_DOCUMENTS)))
        self.assertNotEqual(orders[0], orders[1])
        self.assertIsNone(first_difference(whole, self.runs["whole2"]["steps"]))

    def test_stopped_and_resumed_runs_draw_the_reference(self) -> None:
        """Stopped after a mid-epoch step or the last step of epoch 0, then resumed, with 0 or 2 workers: the two
        runs together are the uninterrupted run exactly."""
        for workers in WORKER_COUNTS:
            reference = self.runs[f"whole{workers}"]["steps"]
            for label, stop in (("mid", MID_EPOCH_STOP), ("end", END_OF_EPOCH_STOP)):
                with self.subTest(workers=workers, stop_after=stop):
                    stopped, resumed = self.runs[f"{label}{workers}-stopped"], self.runs[f"{label}{workers}-resumed"]
                    self.assertEqual(stopped["stopped_after"], stop)
                    self.assertEqual(len(stopped["steps"]), stop)
                    self.assertEqual(resumed["steps"][0][0], stop + 1)
                    self.assertIsNone(first_difference(reference, stopped["steps"] + resumed["steps"]))
        self.assertEqual(self.runs[f"end{WORKER_COUNTS[0]}-resumed"]["steps"][0][1], 1, "resumed in epoch 1")

    def test_two_ranks_split_every_step(self) -> None:
        """Uninterrupted on 2 ranks: per step the ranks' samples are disjoint halves whose union is the step."""
        ranks = [self.runs[f"rank{rank}"]["steps"] for rank in (0, 1)]
        reference = self.runs["whole0"]["steps"]
        self.assertEqual([len(steps) for steps in ranks], [len(reference)] * 2)
        for (step, epoch, ids), *per_rank in zip(reference, *ranks):
            self.assertEqual([(s, e) for s, e, _ in per_rank], [(step, epoch)] * 2)
            self.assertEqual([len(r_ids) for _, _, r_ids in per_rank], [recipe.GLOBAL_BATCH // 2] * 2)
            self.assertFalse(set(per_rank[0][2]) & set(per_rank[1][2]), f"step {step}: ranks share samples")
            self.assertEqual(sorted(per_rank[0][2] + per_rank[1][2]), sorted(ids), f"step {step}")

    def test_resume_without_the_loader_state_is_caught(self) -> None:
        """Negative control: a resume that restores epoch and step but not the loader restarts the epoch, and the
        comparison that certifies the real resumes reports it."""
        stopped = self.runs["mid0-stopped"]["steps"]
        broken = self.runs["mid0-no-loader-state"]["steps"]
        reference = self.runs["whole0"]["steps"]
        difference = first_difference(reference, stopped + broken)
        self.assertIsNotNone(difference)
        self.assertIn(f"position {MID_EPOCH_STOP}:", difference)
        self.assertEqual(broken[0][2], reference[0][2], "the broken resume starts epoch 0 over")


class OutsideLoaderKitVerdict(unittest.TestCase):
    """The kit's DataModuleResumeConformance on the same loader."""

    def test_kit_passes_every_applicable_check(self) -> None:
        """Every check passes except the three the loader backend declares not applicable."""
        from conformance.report import run_classes

        started = time.perf_counter()
        report = run_classes([recipe.TestOutsideLoaderResume])
        seconds = time.perf_counter() - started
        statuses = report.statuses(recipe.TestOutsideLoaderResume.__qualname__)
        self.assertEqual(set(statuses), set(recipe.TestOutsideLoaderResume.check_names()), report.format_text())
        expected = {check: "not applicable" if check in NOT_APPLICABLE_CHECKS else "passed" for check in statuses}
        self.assertEqual(statuses, expected, report.format_text())
        self.assertLess(seconds, 60, f"the kit took {seconds:.0f} s")


if __name__ == "__main__":
    unittest.main()
