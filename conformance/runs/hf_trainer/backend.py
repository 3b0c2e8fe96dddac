"""The Hugging Face Trainer backend (the attached mode): a recipe of ``make_trainer(output_dir, max_steps)`` whose
own ``transformers.Trainer`` runs the loop, saves its checkpoints and resumes with ``resume_from_checkpoint``; the kit
only observes (:mod:`.observer`) and asks for evaluations and the stop step's checkpoint through the Trainer's
callback API."""

from __future__ import annotations

import importlib.metadata
import inspect
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from conformance._setup_checks import described
from conformance.runs.backend import FitPlan, RunOutcome
from conformance.training.recordstore import RecordStore

__all__ = ["HF_TRAINER", "TrainerBackend", "transformers_problem"]

_REMEDIES = {
    "rng_state": "the random state differs where the step starts: let the Trainer restore its rng_state.pth (a "
                 "Trainer subclass overriding _load_rng_state or _save_checkpoint must keep doing so), and draw "
                 "nothing from the global RNG in callbacks between the restore and the first resumed step; on a "
                 "mid-epoch resume the Trainer fetches the first resumed step's batches before it restores the RNG, "
                 "so randomness drawn from the global RNG while batches are collated (DataCollatorForLanguageModeling "
                 "masks, random crops in a collator) cannot resume exactly: derive it from (seed, sample index) in "
                 "the dataset instead",
    "train_inputs": "the data position is not restored: keep ignore_data_skip=False and the same data_seed, seed "
                    "and batch settings in the resumed run, so the Trainer skips exactly the batches already trained",
    "learning_rate": "the learning rate differs: the LR scheduler's state (scheduler.pt) is not restored, or a "
                     "callback sets learning rates from state that is not in the checkpoint (make it an "
                     "ExportableState callback)",
    "global_step": "the Trainer's global step is not restored: keep trainer_state.json in the checkpoint",
}

_HINTS = {
    "train_loss": "the model's outputs hold no 'loss': the kit reads the loss the model computes from the batch's "
                  "labels; give the training samples labels",
    "valid_inputs": "no evaluation ran after the resume point in the uninterrupted run: give the Trainer an "
                    "eval_dataset (the kit asks for an evaluation every validate_every_n_steps steps)",
    "valid_outputs": "the model's forward was never called during evaluation, or no evaluation ran after the resume "
                     "point: give the Trainer an eval_dataset",
    "valid_loss": "the model's evaluation outputs hold no 'loss', or no evaluation ran after the resume point",
}


def transformers_problem() -> str | None:
    """Why this environment cannot run a Trainer recipe (transformers missing or older than 5), or None."""
    try:
        version = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return "make_trainer needs transformers >= 5, which is not installed: pip install 'conformance[hf]'"
    if int(version.split(".", 1)[0]) < 5:
        return (f"make_trainer needs transformers >= 5, this environment has {version}: pip install "
                "'conformance[hf]' (NeMo 2.7 pins transformers 4; certify Trainer recipes in an environment of "
                "their own)")
    return None


class TrainerBackend:
    """Runs recipes whose Hugging Face Trainer drives the loop (see the module docstring)."""

    required_hooks: ClassVar[tuple[str, ...]] = ("make_trainer",)
    not_applicable: ClassVar[Mapping[str, str]] = {}
    unreported_consumed_samples: ClassVar[str] = (
        "the Trainer keeps its data position as the global step and skips that many batches on resume, not as a "
        "consumed-samples count; the data position is judged by test_train_inputs")

    def label(self, recipe: type) -> str:
        return "Hugging Face Trainer"

    def settings_problems(self, recipe: type) -> list[str]:
        missing = transformers_problem()
        problems = [] if missing is None else [missing]
        if getattr(recipe, "num_ranks", 1) != 1:
            problems.append("num_ranks must be 1 for a Hugging Face Trainer recipe: the kit runs its Trainer on one "
                            "process so far")
        if recipe.elastic_resume_world_sizes:
            problems.append("elastic_resume_world_sizes is not supported for a Hugging Face Trainer recipe: remove it")
        hook = inspect.getattr_static(recipe, "make_trainer", None)
        if hook is not None and not isinstance(hook, (classmethod, staticmethod)):
            problems.append("hook 'make_trainer' must be a @classmethod taking (output_dir, max_steps)")
        return problems

    def recipe_problems(self, recipe: type) -> list[str]:
        from transformers import Trainer

        from conformance.runs.hf_trainer.driver import quiet_transformers

        with tempfile.TemporaryDirectory() as folder, quiet_transformers():
            output_dir = str(Path(folder) / "trainer")
            first, second = recipe.make_trainer(output_dir, 3), recipe.make_trainer(output_dir, 3)
        if not isinstance(first, Trainer):
            return [f"make_trainer(output_dir, max_steps) returned {described(first)}, not a transformers.Trainer"]
        problems = []
        if first.args.max_steps != 3:
            problems.append(f"make_trainer(output_dir, max_steps=3) made a Trainer with max_steps="
                            f"{first.args.max_steps}: pass max_steps to TrainingArguments(max_steps=max_steps)")
        if str(first.args.output_dir) != output_dir:
            problems.append("make_trainer(output_dir, max_steps) made a Trainer writing to "
                            f"{first.args.output_dir!r}: pass output_dir to TrainingArguments(output_dir=output_dir), "
                            "where the kit looks for its checkpoints")
        if first.train_dataset is None:
            problems.append("make_trainer(output_dir, max_steps) made a Trainer without a train_dataset")
        if first.model is second.model:
            problems.append("make_trainer() gave two Trainers the same model object: build a new model on every "
                            "call, since every run of the kit starts from its own")
        return problems

    def fit_problems(self, recipe: type) -> list[str]:
        return []

    def world_size(self, recipe: type) -> int:
        return 1

    def environment_label(self, recipe: type) -> str | None:
        return None

    def runs_in_process(self, recipe: type) -> bool:
        return not recipe.resume_in_fresh_process

    def run_fits(self, recipe: type, plans: Sequence[FitPlan], *, in_process: bool, deadline_s: float
                 ) -> list[list[RunOutcome]]:
        from conformance.runs.hf_trainer.driver import run_trainer_fits

        return run_trainer_fits(recipe, plans, in_process=in_process, deadline_s=deadline_s)

    def saved_checkpoint(self, path: Path) -> Path | None:
        """The Trainer's last ``checkpoint-<step>`` folder in the interrupted run's output directory ``path``."""
        folders = [folder for folder in path.glob("checkpoint-*") if folder.name.split("-", 1)[1].isdigit()]
        return max(folders, key=lambda folder: int(folder.name.split("-", 1)[1]), default=None)

    def checkpoint_problems(self, path: Path, records: Sequence[RecordStore], stop_step: int
                            ) -> tuple[str, list[str]]:
        from conformance.runs.hf_trainer.checkpoint_contents import trainer_checkpoint_problems

        return trainer_checkpoint_problems(path, records, stop_step)

    def remedies(self) -> Mapping[str, str]:
        return _REMEDIES

    def hints(self) -> Mapping[str, str]:
        return _HINTS


#: The one instance suites use.
HF_TRAINER = TrainerBackend()
