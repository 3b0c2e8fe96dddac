"""The attached backend: chosen by its hook, set-up mistakes named where they are made (the hook, ``run.watch()``),
a run outside the kit that watches nothing, and checkpoint folders of any layout read weights-only."""

from __future__ import annotations

import json
import shutil
import tempfile
import unittest
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp

from conformance import AttachedRun, StopAndGoConformance
from conformance.report import run_classes
from conformance.runs.attached.backend import ATTACHED
from conformance.runs.attached.checkpoint_contents import folder_values
from conformance.runs.backend import CheckpointUnreadable
from conformance.runs.loop.checkpoint_contents import checkpoint_problems
from conformance.training.recordstore import RecordStore
from reference_models import certify_attached
from reference_models.attached_trainer import AttachedTrainerRecipe, TinyTrainer
from tests.toy_suite import SetupErrorAssertions, adopter

#: The checkpoint folders a :class:`RotatingTrainer` deleted, in order.
ROTATED: list[str] = []


class RotatingTrainer(TinyTrainer):
    """Keeps only its latest checkpoint (a save limit of 1) and saves once more when training ends."""

    def train(self) -> None:
        super().train()
        self.save()

    def save(self) -> None:
        for old in sorted(self.config.checkpoint_dir.glob("step_*")):
            ROTATED.append(old.name)
            shutil.rmtree(old)
        super().save()


class _Opaque:
    """A custom object a weights-only load must refuse (a pathlib.Path is allowed where NeMo is imported)."""


def _run_training_failure(run_training: object) -> str:
    """The message of test_runs_trained for a one-rank in-process recipe whose hook is ``run_training``."""
    cls = adopter(StopAndGoConformance, run_training=classmethod(run_training), resume_in_fresh_process=False,
                  num_steps=2, stop_step=1)
    report = run_classes([cls], checks=["test_runs_trained"])
    outcome = report.outcome(cls.__qualname__, "test_runs_trained")
    assert outcome.status == "failed", outcome
    return outcome.message


class TestAttachedChoiceAndSetup(SetupErrorAssertions):
    def test_the_hook_chooses_the_backend_and_the_report_names_it(self) -> None:
        self.assertIs(certify_attached.TestAttachedTrainerStopAndGo.backend(), ATTACHED)
        report = run_classes([certify_attached.TestAttachedTrainerStopAndGo], checks=["test_global_step"])
        self.assertIn("TestAttachedTrainerStopAndGo\n  backend: attached trainer\n", report.format_text())

    def test_every_settings_problem_at_once(self) -> None:
        cls = adopter(StopAndGoConformance, run_training=lambda run: None, num_ranks=0,
                      elastic_resume_world_sizes=(2,))
        self.assertSetupError(cls, "num_ranks must be an int >= 1", "elastic_resume_world_sizes is not supported",
                              "hook 'run_training' must be a @classmethod")

    def test_a_hook_taking_other_arguments(self) -> None:
        cls = adopter(StopAndGoConformance, run_training=classmethod(lambda cls, output_dir, max_steps: None))
        self.assertSetupError(cls, "hook 'run_training' takes (output_dir, max_steps): it must take one argument")

    def test_every_wrong_watch_argument_at_once(self) -> None:
        message = _run_training_failure(lambda cls, run: run.watch("model", [], step=3, loader=[1, 2]))
        for problem in ("run.watch() was called wrongly", "model is a str", "optimizers is a list",
                        "step is an int: pass a function of no arguments",
                        "loader is a list, which has no state_dict()"):
            self.assertIn(problem, message)

    def test_a_run_that_never_watches(self) -> None:
        message = _run_training_failure(lambda cls, run: None)
        self.assertIn("run_training(run) returned without calling run.watch(", message)


class TestAttachedRunOutsideTheKit(unittest.TestCase):
    def test_watch_records_nothing_and_changes_nothing(self) -> None:
        model = torch.nn.Linear(2, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        run = AttachedRun(num_steps=1, max_steps=1, save_step=None, checkpoint_dir=Path("unused"),
                          resume_from=None, seed=0)
        run.watch(model, [optimizer], step=lambda: 0)
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        self.assertEqual(len(model._forward_pre_hooks), 1)  # the kit's, inert outside a run


class TestAttachedCheckpointFolders(unittest.TestCase):
    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.folder, True)

    def test_dcp_torch_json_and_safetensors_files_are_read_and_others_skipped(self) -> None:
        from safetensors.torch import save_file

        step = self.folder / "step_4"
        dcp.save({"model": {"weight": torch.arange(3.0)}}, checkpoint_id=str(step / "model"))
        torch.save({"step": 4, "rng": torch.tensor([1, 2])}, step / "trainer-rank0.pt")
        save_file({"head": torch.ones(2)}, str(step / "head.bin"))
        (step / "progress.json").write_text(json.dumps({"global_step": 4}))
        (step / "config.yaml").write_text("lr: 0.1\n")
        values, read, skipped = folder_values(self.folder)
        self.assertEqual(read, ["step_4/model/ (DCP)", "step_4/head.bin", "step_4/progress.json",
                                "step_4/trainer-rank0.pt"])
        self.assertEqual(skipped, ["step_4/config.yaml"])
        self.assertTrue(torch.equal(values["step_4/model.model.weight"], torch.arange(3.0)))
        self.assertEqual(values["step_4/trainer-rank0_pt.step"], 4)
        self.assertTrue(torch.equal(values["step_4/head_bin.head"], torch.ones(2)))
        self.assertEqual(values["step_4/progress_json.global_step"], 4)
        self.assertFalse(any(key.startswith("step_4/config") for key in values))

    def test_a_trainer_file_inside_a_dcp_folder_is_read_on_its_own(self) -> None:
        # an outside trainer keeps its extra state beside DCP's files in one step_<N> folder (it was skipped)
        dcp.save({"model": {"weight": torch.ones(2)}}, checkpoint_id=str(self.folder / "step_4"))
        torch.save({"step": 4}, self.folder / "step_4" / "extra_rank0.pt")
        values, read, _ = folder_values(self.folder)
        self.assertEqual(read, ["step_4/ (DCP)", "step_4/extra_rank0.pt"])
        self.assertEqual(values["step_4/extra_rank0_pt.step"], 4)

    def test_a_loader_state_of_counts_only_is_held_by_its_integers(self) -> None:
        records = RecordStore(self.folder / "records")
        for stream, value in (("saved_weights", {}), ("optimizer_state", []), ("lr_scheduler_state", []),
                              ("saved_data_state", {"_sampler_iter_yielded": 3, "_num_yielded": 3})):
            records.write(stream, (4,), value)
        self.assertEqual(checkpoint_problems({"trainer.step": 4, "trainer.loader._num_yielded": 3,
                                              "trainer.loader._sampler_iter_yielded": 3}, [records], 4), [])
        self.assertIn("rank 0's train-loader state is not in it (no integer '_num_yielded' equal to its 3)",
                      "\n".join(checkpoint_problems({"trainer.step": 4, "trainer.loader._sampler_iter_yielded": 3},
                                                    [records], 4)))

    def test_a_pickled_object_is_refused_not_unpickled(self) -> None:
        torch.save({"config": _Opaque()}, self.folder / "extra.pt")
        with self.assertRaises(CheckpointUnreadable) as caught:
            folder_values(self.folder)
        self.assertIn("extra.pt in the checkpoint cannot be read with weights-only loading", str(caught.exception))


class TestCheckpointSnapshot(unittest.TestCase):
    def test_a_checkpoint_the_reference_run_deletes_later_is_still_the_one_restored(self) -> None:
        """The reference run trains on after its checkpoint and deletes it at its final save; the resumed run
        restores the kit's copy of it, taken as it was written (without the copy it would resume at the end)."""
        ROTATED.clear()
        cls = type("RotatingCheckpoints", (AttachedTrainerRecipe, StopAndGoConformance, unittest.TestCase),
                   {"trainer_class": RotatingTrainer, "resume_in_fresh_process": False, "num_steps": 6,
                    "stop_step": 3})
        report = run_classes([cls])
        self.assertIn("step_3", ROTATED, "the reference run never deleted its checkpoint: the test proves nothing")
        self.assertTrue(report.ok, report.format_text())
        self.assertEqual(report.statuses()["test_train_loss"], "passed")


if __name__ == "__main__":
    unittest.main()
