"""DataModuleResumeConformance on a stateful loader outside Lightning: the backend is chosen by ``make_loader``, the
torchdata reference loader resumes exactly without the kit and passes every applicable check with the kit, and
set-up mistakes end in one error naming each of them."""

from __future__ import annotations

import io
import unittest
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from conformance import ConformanceSetupError, DataModuleResumeConformance
from conformance.report import run_classes
from conformance.runs.lightning.data_backend import LIGHTNING_DATA
from conformance.runs.loader.backend import LOADER
from conformance.runs.loader.probe import quiet_torchdata
from reference_models import stateful_loader
from reference_models.data import SyntheticDataModule
from tests.toy_suite import SetupErrorAssertions, adopter

REFERENCE, STREAM = "TestStatefulLoaderResume", "TestStatefulStreamResume"
NOT_APPLICABLE = {"test_validation_starts_at_first_sample", "test_state_restored_before_first_batch",
                  "test_elastic_resume"}


def _epochs_of(loader: StatefulDataLoader, first_epoch: int, epochs: int, stop_after: int | None = None
               ) -> tuple[list[list[int]], Any]:
    """Sample ids per batch over ``first_epoch..epochs-1`` (set_epoch before each), stopping after ``stop_after``
    batches with the loader's state at that point."""
    batches: list[list[int]] = []
    with quiet_torchdata():  # torchdata 0.11 warns in every StatefulDataLoader's __init__ on torch 2.13
        for epoch in range(first_epoch, epochs):
            loader.sampler.set_epoch(epoch)
            for batch in loader:
                batches.append(batch["idx"].tolist())
                if len(batches) == stop_after:
                    return batches, (epoch, loader.state_dict())
    return batches, None


def _saved_and_loaded(state: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


class TestReferenceLoaderWithoutTheKit(unittest.TestCase):
    """The reference loader alone, in a loop of this test's own: stop after a step, save the state, load it into
    a fresh loader, continue: the batches are the uninterrupted ones (its sampler draws from its own seed only)."""

    def test_stopped_and_resumed_streams_equal_the_uninterrupted_one(self) -> None:
        for workers in (0, 2):
            straight, _ = _epochs_of(stateful_loader.make_loader(0, 1, workers), 0, 2)
            self.assertEqual(len(straight), 10)
            for stop in (2, 5, 7):  # mid epoch 0, its last step, mid epoch 1
                with self.subTest(workers=workers, stop=stop):
                    before, (epoch, state) = _epochs_of(stateful_loader.make_loader(0, 1, workers), 0, 2, stop)
                    fresh = stateful_loader.make_loader(0, 1, workers)
                    fresh.load_state_dict(_saved_and_loaded(state))
                    after, _ = _epochs_of(fresh, epoch, 2)
                    self.assertEqual(before + after, straight)

    def test_a_resume_without_the_state_differs(self) -> None:
        straight, _ = _epochs_of(stateful_loader.make_loader(0, 1, 0), 0, 2)
        before, (epoch, _) = _epochs_of(stateful_loader.make_loader(0, 1, 0), 0, 2, 2)
        after, _ = _epochs_of(stateful_loader.make_loader(0, 1, 0), epoch, 2)
        self.assertNotEqual(before + after, straight)


class TestReferenceLoaderWithTheKit(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.report = run_classes([getattr(stateful_loader, REFERENCE), getattr(stateful_loader, STREAM)])

    def test_every_applicable_check_passes(self) -> None:
        for name in (REFERENCE, STREAM):
            statuses = self.report.statuses(name)
            expected = {check: "not applicable" if check in NOT_APPLICABLE else "passed" for check in statuses}
            self.assertEqual(set(statuses), set(DataModuleResumeConformance.check_names()))
            self.assertEqual(statuses, expected, self.report.format_text())

    def test_only_an_iterable_dataset_is_judged_against_its_own_two_worker_order(self) -> None:
        stream, reference = getattr(stateful_loader, STREAM), getattr(stateful_loader, REFERENCE)
        self.assertTrue(LOADER.capabilities(stream).order_depends_on_workers)
        self.assertFalse(LOADER.capabilities(reference).order_depends_on_workers)

    def test_the_report_names_the_backend_and_why_checks_do_not_apply(self) -> None:
        text = self.report.format_text()
        self.assertIn(f"{REFERENCE}\n  backend: stateful loader (kit's epoch loop)\n", text)
        self.assertIn("consumed samples n/a: a loader's state keeps its own positions", text)
        for check in NOT_APPLICABLE:
            self.assertTrue(self.report.outcome(REFERENCE, check).message.strip(), check)


def _loader_adopter(**hooks: Any) -> type:
    return adopter(DataModuleResumeConformance, **hooks)


class NumpyStateLoader(StatefulDataLoader):
    """A fresh loader whose state holds a numpy integer."""

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "epoch": np.int64(0)}


class TestLoaderSetup(SetupErrorAssertions):
    def test_hooks_choose_the_backend(self) -> None:
        self.assertIs(getattr(stateful_loader, REFERENCE).backend(), LOADER)
        self.assertIs(adopter(DataModuleResumeConformance,
                              make_datamodule=classmethod(lambda cls: SyntheticDataModule())).backend(), LIGHTNING_DATA)

    def test_a_missing_hook_names_make_loader_not_the_data_module(self) -> None:
        cls = _loader_adopter(make_loader=lambda rank, world_size, num_workers: None)
        with self.assertRaises(ConformanceSetupError) as caught:
            cls.validate_settings()
        self.assertIn("hook 'make_loader' must be a @classmethod", str(caught.exception))
        self.assertNotIn("make_datamodule", str(caught.exception))

    def test_a_signature_without_rank_world_size_and_workers(self) -> None:
        cls = _loader_adopter(make_loader=classmethod(lambda cls: stateful_loader.make_loader(0, 1, 0)))
        self.assertSetupError(cls, "cannot be called as make_loader(rank, world_size, num_workers)")

    def test_a_plain_data_loader_has_no_state(self) -> None:
        cls = _loader_adopter(make_loader=classmethod(
            lambda cls, rank, world_size, num_workers: DataLoader(range(8), batch_size=2)))
        self.assertSetupError(cls, "make_loader(0, 1, 0) returned a DataLoader, which has no state_dict() and "
                              "load_state_dict()", "StatefulDataLoader")

    def test_one_loader_for_every_run(self) -> None:
        shared = stateful_loader.make_loader(0, 1, 0)
        cls = _loader_adopter(make_loader=classmethod(lambda cls, rank, world_size, num_workers: shared))
        self.assertSetupError(cls, "the same object on two calls", "build a new loader on every call")

    def test_a_state_that_does_not_load_weights_only(self) -> None:
        reference = stateful_loader.make_loader(0, 1, 0)
        cls = _loader_adopter(make_loader=classmethod(lambda cls, rank, world_size, num_workers: NumpyStateLoader(
            reference.dataset, batch_size=4, sampler=reference.sampler)))
        self.assertSetupError(cls, "does not survive torch.save and torch.load(weights_only=True)",
                              "not numpy scalars")

    def test_batches_without_sample_ids(self) -> None:
        cls = _loader_adopter(make_loader=classmethod(lambda cls, rank, world_size, num_workers: StatefulDataLoader(
            [torch.zeros(2)] * 8, batch_size=2)))
        self.assertSetupError(cls, "sample_ids() cannot read the first batch of make_loader(0, 1, 0)")


if __name__ == "__main__":
    unittest.main()
