"""The exact gate on a resume: digests over a canonical walk, and what the gate says when the restored state is not
the saved one (moments zeroed or missing, a scheduler restarted, the loop restarted, another optimizer count)."""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path
from typing import Any

import torch

from conformance.suites._restored_state import restored_state_gate
from conformance.training.recorder import StepRecorder
from conformance.training.recordstore import RecordStore
from conformance.training.state_digest import leaf_difference, state_digest

STOP = 2


def _trained_parts() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for _ in range(STOP):
        model(torch.randn(5, 3)).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    return model, optimizer, scheduler


class TestStateDigest(unittest.TestCase):
    def test_equal_states_have_equal_digests_whatever_the_key_order(self) -> None:
        first = {"b": torch.arange(3.0), "a": [1, {"x": torch.ones(2)}]}
        second = {"a": [1, {"x": torch.ones(2)}], "b": torch.arange(3.0)}
        self.assertEqual(state_digest(first), state_digest(second))

    def test_dtype_shape_sign_of_zero_and_plain_values_all_count(self) -> None:
        base = state_digest({"w": torch.zeros(2, 2)})
        for changed in ({"w": torch.zeros(2, 2, dtype=torch.float64)}, {"w": torch.zeros(4)},
                        {"w": torch.tensor([[0.0, -0.0], [0.0, 0.0]])}, {"w": torch.zeros(2, 2), "lr": 0.1}):
            self.assertNotEqual(state_digest(changed), base, changed)
        self.assertNotEqual(state_digest({"lr": 1}), state_digest({"lr": 1.0}))

    def test_leaf_difference_names_zeroed_and_changed_tensors(self) -> None:
        saved = torch.tensor([1e-6, 2e-6])
        self.assertIsNone(leaf_difference(saved, saved.clone()))
        self.assertIn("all zeros", leaf_difference(saved, torch.zeros(2)))
        self.assertIn("max abs diff 1e-06", leaf_difference(saved, torch.tensor([2e-6, 2e-6])))
        self.assertIn("float32[3]", leaf_difference(saved, torch.zeros(3)))
        self.assertEqual(leaf_difference(0.1, 0.2), "is 0.2, the saving run had 0.1")


class TestRestoredStateGate(unittest.TestCase):
    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp())
        self.model, self.optimizer, self.scheduler = _trained_parts()
        saving = StepRecorder(RecordStore(self.folder / "saving"))
        saving.optimizer_step_ends(STOP, 0, [[0.025]], None, [self.optimizer.state_dict()],
                                   [self.scheduler.state_dict()])
        saving.checkpoint_saved(STOP, self.model.state_dict(), None)
        saving.close()
        self.saving = RecordStore(self.folder / "saving")

    def _gate(self, *, step: int = STOP, optimizers: list[Any] | None = None) -> list[str]:
        store = RecordStore(self.folder / f"resumed{len(list(self.folder.iterdir()))}")
        StepRecorder(store).state_restored(step, self.model, [self.optimizer] if optimizers is None else optimizers,
                                           [self.scheduler])
        store.close()
        return restored_state_gate(self.saving, RecordStore(store.root), STOP).problems

    def test_the_same_state_passes_with_its_digests(self) -> None:
        store = RecordStore(self.folder / "same")
        StepRecorder(store).state_restored(STOP, self.model, [self.optimizer], [self.scheduler])
        store.close()
        outcome = restored_state_gate(self.saving, RecordStore(store.root), STOP)
        self.assertEqual(outcome.problems, [])
        self.assertEqual(list(outcome.digests), ["weights", "optimizer 0", "LR scheduler 0"])
        self.assertEqual(outcome.digests["weights"], state_digest(self.model.state_dict()))

    def test_zeroed_second_moments_are_named_by_parameter(self) -> None:
        for state in self.optimizer.state.values():
            state["exp_avg_sq"].zero_()
        problems = self._gate()
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("optimizer 0: `exp_avg_sq` of parameter `0.weight` is all zeros", problems[0])
        self.assertIn("likewise parameter `0.bias`, parameter `1.weight`, parameter `1.bias`", problems[0])

    def test_a_fresh_optimizer_and_scheduler_are_reported_as_missing_state(self) -> None:
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=0.1)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=1, gamma=0.5)
        problems = "\n".join(self._gate())
        self.assertIn("optimizer 0: `exp_avg` of parameter `0.weight` is missing (not restored)", problems)
        self.assertIn("LR scheduler 0: `last_epoch` is 0, the saving run had 2", problems)

    def test_changed_weights_and_param_group_settings_are_named(self) -> None:
        with torch.no_grad():
            self.model[1].bias.add_(1.0)
        self.optimizer.param_groups[0]["weight_decay"] = 0.5
        problems = "\n".join(self._gate())
        self.assertIn("weights: `1.bias` differs (max abs diff 1)", problems)
        self.assertIn("optimizer 0: `weight_decay` of param group 0 is 0.5, the saving run had 0.01", problems)

    def test_a_run_restarting_at_step_zero_or_with_another_optimizer_count_fails(self) -> None:
        store = RecordStore(self.folder / "restarted")
        StepRecorder(store).state_restored(0, self.model, [self.optimizer], [self.scheduler])
        store.close()
        (problem,) = restored_state_gate(self.saving, RecordStore(store.root), STOP).problems
        self.assertIn("started training at global step 0 (or never trained), not after optimizer step 2", problem)
        extra = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.assertIn("optimizer 1: the saving run had none", "\n".join(self._gate(optimizers=[self.optimizer, extra])))


if __name__ == "__main__":
    unittest.main()
