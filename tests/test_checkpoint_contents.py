"""What test_checkpoint_contents requires of a checkpoint: where a saved checkpoint is found, and the problems found
in NeMo's sharded format, on checkpoints built here (no NeMo needed)."""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

import torch

from conformance.runs.lightning.checkpoint_contents import checkpoint_problems
from conformance.training.checkpoints import SavedCheckpoint, load_checkpoint, saved_checkpoint
from conformance.training.recordstore import RecordStore

_STOP = 3
_EXP_AVG = [torch.full((4, 2), 0.5), torch.full((3,), -1.0)]
_EXP_AVG_SQ = [torch.full((4, 2), 0.25), torch.full((3,), 2.0)]


def _records(folder: Path) -> RecordStore:
    """What an interrupted run of one rank recorded at the stop step: Adam moments of two parameters."""
    store = RecordStore(folder)
    store.write("start", (0,), {"global_step": 0, "consumed_samples": 0, "datamodule_class": "Data"})
    state = {index: {"step": torch.tensor(3.0), "exp_avg": avg, "exp_avg_sq": sq}
             for index, (avg, sq) in enumerate(zip(_EXP_AVG, _EXP_AVG_SQ))}
    store.write("optimizer_state", (_STOP,), [{"state": state, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}])
    store.write("lr_scheduler_state", (_STOP,), [{"last_epoch": 3}])
    store.write("consumed_samples", (_STOP,), 12)
    store.close()
    return store


def _sharded(exp_avg_sq: torch.Tensor | None = None) -> SavedCheckpoint:
    """NeMo's layout of the same state: the two parameters' moments under names, in other shapes."""
    tensors = {"module.weight": torch.zeros(4, 2), "module.bias": torch.zeros(3),
               "optimizer.state.exp_avg.module.weight": _EXP_AVG[0].clone(),
               "optimizer.state.exp_avg.module.bias": _EXP_AVG[1].clone(),
               "optimizer.state.exp_avg_sq.module.weight": _EXP_AVG_SQ[0].clone().reshape(8),
               "optimizer.state.exp_avg_sq.module.bias": _EXP_AVG_SQ[1].clone()}
    if exp_avg_sq is not None:
        tensors["optimizer.state.exp_avg_sq.module.bias"] = exp_avg_sq
    state = {"global_step": _STOP, "loops": {}, "lr_schedulers": [{"last_epoch": 3}],
             "Data": {"consumed_samples": 12}}
    return SavedCheckpoint(state, tensors, "NeMo distributed checkpoint")


class TestSavedCheckpoint(unittest.TestCase):
    def test_a_file_or_nemos_directory_is_found_and_nothing_else(self) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "stop.ckpt"
            self.assertIsNone(saved_checkpoint(path))
            (Path(folder) / "stop").mkdir()
            self.assertEqual(saved_checkpoint(path), Path(folder) / "stop")
            torch.save({"global_step": 3}, path)
            self.assertEqual(saved_checkpoint(path), path)
            self.assertEqual(load_checkpoint(path).state, {"global_step": 3})
            self.assertFalse(load_checkpoint(path).is_sharded)


class TestShardedCheckpointProblems(unittest.TestCase):
    def setUp(self) -> None:
        self.folder = tempfile.TemporaryDirectory()
        self.records = [_records(Path(self.folder.name))]

    def tearDown(self) -> None:
        self.folder.cleanup()

    def test_the_runs_state_in_another_layout_has_no_problem(self) -> None:
        self.assertEqual(checkpoint_problems(_sharded(), self.records, _STOP), [])

    def test_a_moment_left_out_is_named(self) -> None:
        checkpoint = _sharded()
        for key in [key for key in checkpoint.sharded if ".exp_avg_sq." in key]:
            del checkpoint.sharded[key]
        [problem] = checkpoint_problems(checkpoint, self.records, _STOP)
        self.assertIn("'exp_avg_sq' is not saved", problem)

    def test_a_zeroed_moment_is_found_on_one_rank(self) -> None:
        [problem] = checkpoint_problems(_sharded(exp_avg_sq=torch.zeros(3)), self.records, _STOP)
        self.assertIn("'exp_avg_sq' saved sums to 2,", problem)

    def test_sums_are_not_compared_across_tensor_parallel_ranks(self) -> None:
        both_ranks = self.records * 2  # replicated parameters appear on each rank
        self.assertEqual(checkpoint_problems(_sharded(exp_avg_sq=torch.zeros(3)), both_ranks, _STOP), [])

    def test_missing_weights_step_and_data_state_are_named(self) -> None:
        checkpoint = _sharded()
        checkpoint.sharded = {key: value for key, value in checkpoint.sharded.items() if not key.startswith("module.")}
        checkpoint.state["global_step"] = 2
        del checkpoint.state["Data"]
        problems = "\n".join(checkpoint_problems(checkpoint, self.records, _STOP))
        self.assertIn("no model weights", problems)
        self.assertIn("global_step is 2, expected 3", problems)
        self.assertIn("saved under 'Data' with consumed_samples=12", problems)


if __name__ == "__main__":
    unittest.main()
