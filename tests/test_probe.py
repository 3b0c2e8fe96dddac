"""The data-module probe and the clear errors DataModuleResumeConformance gives on bad input."""

from __future__ import annotations

import unittest
from typing import Any

import torch
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import default_collate

from conformance import ConformanceSetupError, DataModuleResumeConformance
from conformance.report import run_classes
from conformance.runs.data_probe import ProbePlan
from conformance.runs.lightning.probe import run_probe
from conformance.runs.processes import importable_name
from reference_models.data import SyntheticDataModule


def tokens_only(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {"tokens": default_collate([item["tokens"] for item in items])}


class IdlessDataModule(SyntheticDataModule):
    """Batches without sample ids."""

    def train_dataloader(self) -> DataLoader:
        return self.resumable_train_dataloader(self.train_set, collate_fn=tokens_only)


class TensorStateDataModule(SyntheticDataModule):
    """Keeps a tensor in its state: checkpointable, but not JSON."""

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "generator": torch.get_rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict({key: value for key, value in state_dict.items() if key != "generator"})


def recipe(datamodule_class: type, **datamodule_kwargs: Any) -> type:
    return type("Recipe", (DataModuleResumeConformance,), {
        "make_datamodule": classmethod(lambda cls: datamodule_class(**datamodule_kwargs))})


class TestProbe(unittest.TestCase):
    def test_records_every_sample_of_an_epoch_once(self) -> None:
        [log] = run_probe(recipe(SyntheticDataModule), ProbePlan(max_epochs=1))
        self.assertIsNone(log.error)
        drawn = [index for _, epoch, ids in log.train for index in ids]
        self.assertEqual(sorted(drawn), sorted(set(drawn)))
        self.assertEqual(len(drawn), 40, "5 global batches of 8; the partial batch of 4 is dropped")
        self.assertEqual(log.start_state, {"consumed_samples": 0, "global_batch_size": 8, "data_parallel_size": 1})

    def test_missing_ids_are_reported(self) -> None:
        [log] = run_probe(recipe(IdlessDataModule), ProbePlan(max_epochs=1))
        self.assertIn("cannot find sample ids in a mapping with keys ['tokens']", log.error)

    def test_world_size_that_cannot_split_the_global_batch(self) -> None:
        logs = run_probe(recipe(SyntheticDataModule), ProbePlan(max_epochs=1, world_size=3))
        self.assertEqual(len(logs), 3)
        self.assertIn("global_batch_size 8 is not a multiple of micro_batch_size x world size = 4 x 3", logs[0].error)

    def test_the_recipe_overrides_trainer_defaults_but_not_what_the_run_owns(self) -> None:
        overriding = type("Overriding", (recipe(SyntheticDataModule),), {
            "trainer_kwargs": classmethod(lambda cls: {"limit_val_batches": 1})})
        [log] = run_probe(overriding, ProbePlan(max_epochs=1))
        self.assertIsNone(log.error)
        self.assertEqual({batch for _, batch, _ in log.valid}, {0}, "one validation batch per pass, as asked")
        owning = type("Owning", (recipe(SyntheticDataModule),), {
            "trainer_kwargs": classmethod(lambda cls: {"accumulate_grad_batches": 3})})
        with self.assertRaisesRegex(ConformanceSetupError, r"trainer_kwargs\(\) sets \['accumulate_grad_batches'\]"):
            owning.validate_settings()

    def test_multi_rank_runs_need_an_importable_class(self) -> None:
        with self.assertRaises(TypeError) as caught:
            importable_name(recipe(SyntheticDataModule))
        self.assertIn("define it at module level", str(caught.exception))


class TestBadDataModuleState(unittest.TestCase):
    def test_non_json_state_fails_the_checkpoint_check_clearly(self) -> None:
        cls = type("TensorState", (recipe(TensorStateDataModule), unittest.TestCase), {})
        report = run_classes([cls], checks=["test_checkpoint_state"])
        outcome = report.outcome("TensorState", "test_checkpoint_state")
        self.assertEqual(outcome.status, "failed")
        self.assertIn("is not JSON-serialisable", outcome.message)


if __name__ == "__main__":
    unittest.main()
