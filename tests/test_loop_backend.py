"""The loop backend: chosen by its hooks, set-up mistakes as one clear error, checkpoints read weights-only, checks
that do not apply reported as such."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import unittest
from pathlib import Path

import torch

from conformance import ConformanceSetupError, LoopRNGState, StopAndGoConformance, TrainingState
from conformance.report import run_classes
from conformance.runs.backend import CheckpointUnreadable
from conformance.runs.lightning.backend import LIGHTNING
from conformance.runs.loop.backend import LOOP
from conformance.runs.loop.checkpoint import load_training_state, read_checkpoint, save_training_state
from conformance.runs.loop.checkpoint_contents import read_values
from reference_models import certify_loop
from reference_models.recipes import GPTRecipe
from reference_models.torch_loop import GPTLoopRecipe
from tests.toy_suite import SetupErrorAssertions, adopter


def _state() -> TrainingState:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return TrainingState(model=model, optimizers=[optimizer], lr_schedulers=[scheduler],
                         train_loader=[torch.ones(1, 3)], stateful={"rng": LoopRNGState()})


def _trained() -> TrainingState:
    state = _state()
    state.model(torch.ones(4, 3)).sum().backward()
    state.optimizers[0].step()
    state.lr_schedulers[0].step()
    state.step, state.epoch = 1, 0
    state.stateful["rng"].on_train_step_end()
    return state


class TestBackendChoice(unittest.TestCase):
    def test_hooks_choose_the_backend(self) -> None:
        self.assertIs(certify_loop.TestGPTLoopStopAndGo.backend(), LOOP)
        self.assertIs(type("LightningClass", (GPTRecipe, StopAndGoConformance), {}).backend(), LIGHTNING)

    def test_the_report_names_the_backend(self) -> None:
        report = run_classes([certify_loop.TestGPTLoopStopAndGo], checks=["test_global_step"])
        self.assertEqual(report.outcomes[0].backend, "PyTorch loop")
        self.assertIn("TestGPTLoopStopAndGo\n  backend: PyTorch loop\n", report.format_text())


class TestLoopSetupErrors(SetupErrorAssertions):
    def test_a_missing_train_step_is_named_with_no_lightning_hook_asked_for(self) -> None:
        cls = adopter(StopAndGoConformance, make_training_state=classmethod(lambda cls: _state()))
        with self.assertRaises(ConformanceSetupError) as caught:
            cls.validate_settings()
        self.assertIn("hook 'train_step' is missing", str(caught.exception))
        self.assertNotIn("make_model", str(caught.exception))

    def test_every_settings_problem_at_once(self) -> None:
        cls = adopter(StopAndGoConformance, make_training_state=classmethod(lambda cls: _state()),
                      train_step=classmethod(lambda cls, state, batch: None), num_ranks=0,
                      elastic_resume_world_sizes=(2,), save_state=lambda state, directory: None)
        self.assertSetupError(cls, "num_ranks must be an int >= 1", "elastic_resume_world_sizes is not supported",
                              "hook 'save_state' must be a @classmethod")

    def test_a_module_instead_of_a_training_state(self) -> None:
        cls = adopter(StopAndGoConformance, make_training_state=classmethod(lambda cls: torch.nn.Linear(1, 1)),
                      train_step=classmethod(lambda cls, state, batch: None), resume_in_fresh_process=False)
        self.assertSetupError(cls, "make_training_state() returned a torch.nn.Module (Linear), not a "
                                   "conformance.TrainingState")

    def test_shared_model_and_half_a_validation(self) -> None:
        shared = _state()
        cls = adopter(StopAndGoConformance,
                      make_training_state=classmethod(lambda cls: dataclasses.replace(shared, stateful={})),
                      train_step=classmethod(lambda cls, state, batch: None),
                      validation_step=classmethod(lambda cls, state, batch: None), resume_in_fresh_process=False)
        self.assertSetupError(cls, "returned the same model object twice", "validation needs both")


class TestLoopCheckpoints(unittest.TestCase):
    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.folder, True)

    def test_a_saved_state_loads_into_a_fresh_one_exactly(self) -> None:
        trained = _trained()
        save_training_state(trained, self.folder / "ckpt")
        fresh = _state()
        load_training_state(fresh, self.folder / "ckpt")
        self.assertEqual((fresh.step, fresh.epoch), (1, 0))
        self.assertTrue(torch.equal(fresh.model.weight, trained.model.weight))
        self.assertEqual(fresh.lr_schedulers[0].state_dict(), trained.lr_schedulers[0].state_dict())
        moments = fresh.optimizers[0].state_dict()["state"][0]["exp_avg"]
        self.assertTrue(torch.equal(moments, trained.optimizers[0].state_dict()["state"][0]["exp_avg"]))

    def test_the_reader_finds_values_by_key(self) -> None:
        save_training_state(_trained(), self.folder / "ckpt")
        values = read_checkpoint(self.folder / "ckpt")
        self.assertEqual(values["training_state.loop.step"], 1)
        self.assertEqual(values["training_state.lr_schedulers.0.last_epoch"], 1)
        self.assertEqual(tuple(values["training_state.model.weight"].shape), (2, 3))

    def test_a_pickled_object_is_refused_not_unpickled(self) -> None:
        torch.save({"config": _Unsafe()}, self.folder / "file.pt")
        with self.assertRaises(CheckpointUnreadable) as caught:
            read_values(self.folder / "file.pt")
        self.assertIn("weights-only loading", str(caught.exception))

    def test_neither_folder_nor_file_is_named(self) -> None:
        (self.folder / "odd").mkdir()
        with self.assertRaises(CheckpointUnreadable) as caught:
            read_values(self.folder / "odd")
        self.assertIn("neither a torch.distributed.checkpoint folder", str(caught.exception))


class TestNotApplicable(unittest.TestCase):
    def test_consumed_samples_checks_say_why_they_do_not_apply(self) -> None:
        report = run_classes([certify_loop.TestGPTLoopStopAndGo],
                             checks=["test_consumed_samples", "test_initial_consumed_samples", "test_train_inputs"])
        statuses = report.statuses()
        self.assertEqual(statuses, {"test_consumed_samples": "not applicable",
                                    "test_initial_consumed_samples": "not applicable", "test_train_inputs": "passed"})
        self.assertIn("judged by test_train_inputs", report.outcome("TestGPTLoopStopAndGo",
                                                                     "test_consumed_samples").message)
        self.assertTrue(report.ok, "a check that does not apply is neither a pass nor a failure of the class")

    def test_a_loop_that_reports_consumed_samples_is_checked(self) -> None:
        report = run_classes([CountingLoop], checks=["test_consumed_samples", "test_initial_consumed_samples"])
        self.assertEqual(set(report.statuses().values()), {"passed"})


class _Unsafe:
    """Not an allowed global of a weights-only load."""


class CountingLoop(GPTLoopRecipe, StopAndGoConformance, unittest.TestCase):
    """The reference loop reporting the samples its loader yielded (torchdata keeps the batches yielded)."""

    num_steps = 6
    stop_step = 3

    @classmethod
    def consumed_samples(cls, state: TrainingState) -> int:
        yielded = state.train_loader.state_dict()["_num_yielded"]
        return (state.epoch * 5 + yielded) * cls.global_batch_size


if __name__ == "__main__":
    unittest.main()
