"""The one protocol every backend implements: how the kit runs a recipe's training in one framework or loop style.

A suite never asks which framework a recipe uses; it asks the backend chosen for the class (from the hooks the
recipe defines, see :func:`conformance.suites.stop_and_go.StopAndGoConformance.backend`) and consumes only what
backends return: :class:`RunOutcome` records on disk, checkpoint problems as sentences, labels for reports.
Backends live one folder each under :mod:`conformance.runs` (``lightning`` with NeMo as its refinement, ``loop``
for training loops the kit drives itself).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from conformance.training.recordstore import RecordStore

__all__ = ["Backend", "CheckpointUnreadable", "FitPlan", "RecipeBackend", "RunOutcome"]


@dataclass(frozen=True)
class FitPlan:
    """One training run: where it records, how long it trains, and whether it is interrupted or resumed.
    JSON-serialisable, so that it reaches rank processes as it is.

    ``trainer_defaults`` are framework arguments the recipe's own settings may override (Lightning's Trainer
    arguments). ``world_size``, when set, runs the recipe on that many ranks (an elastic resume).
    """

    name: str
    work_dir: str
    max_steps: int
    seed: int
    record: bool = True
    stop_step: int | None = None
    interruption: Literal["clean", "crash", "kill"] | None = None
    checkpoint: str | None = None
    resume_from: str | None = None
    trainer_defaults: dict[str, Any] = field(default_factory=dict)
    world_size: int | None = None
    #: The run (same rank) whose records this one's may share where they are byte for byte the same.
    shares_records_with: str | None = None
    #: Validate after every this many optimizer steps, for backends whose loop the kit drives (None: never).
    validate_every_n_steps: int | None = None
    #: Train in deterministic mode (:mod:`conformance.determinism`), switched on before the recipe builds anything.
    deterministic: bool = False

    @property
    def dies_after_saving(self) -> bool:
        """Whether the run saves its checkpoint and then ends as ``interruption`` says (otherwise it trains on)."""
        return self.checkpoint is not None and self.interruption is not None

    @property
    def trains_on_after_saving(self) -> bool:
        """Whether the run saves a checkpoint and trains on (the shared trajectory's reference run)."""
        return self.checkpoint is not None and self.interruption is None

    def rank_dir(self, rank: int) -> Path:
        return Path(self.work_dir) / self.name / f"rank{rank}"

    def store(self, rank: int) -> RecordStore:
        """The record store rank ``rank`` of this run writes, sharing bytes with its reference run's if it has one."""
        reference = self.shares_records_with
        return RecordStore(self.rank_dir(rank) / "records", reference=None if reference is None else RecordStore(
            Path(self.work_dir) / reference / f"rank{rank}" / "records"))


@dataclass(frozen=True)
class RunOutcome:
    """What one rank of a run left behind: its records, the error that ended it (if unexpected) and its wall time."""

    name: str
    records: RecordStore
    error: str | None
    seconds: float
    rank: int = 0
    failed_at: float | None = None


class RecipeBackend(Protocol):
    """What every suite asks the backend of its class, whatever the suite runs: hooks, labels, set-up problems."""

    #: Classmethod hooks a recipe of this backend must define.
    required_hooks: ClassVar[tuple[str, ...]]
    #: Checks whose fact does not exist for this backend, with the reason shown in reports (never a silent skip).
    not_applicable: ClassVar[Mapping[str, str]]

    def label(self, recipe: type) -> str:
        """Shown in every report beside the class: which backend certified it ("Lightning", "PyTorch loop")."""
    def environment_label(self, recipe: type) -> str | None:
        """How reports must qualify the recipe's runs (e.g. an emulation), or None when they are what they say."""
    def settings_problems(self, recipe: type) -> list[str]:
        """Problems with the recipe's backend-specific settings, found without building anything."""
    def recipe_problems(self, recipe: type) -> list[str]:
        """Problems with what the recipe's hooks return, found by calling them before anything runs."""


class Backend(RecipeBackend, Protocol):
    """How the kit trains, interrupts, resumes and inspects a recipe of one framework or loop style."""

    #: Why the consumed-samples checks do not apply when the recipe's data reports no such count (a recipe is
    #: never failed for the shape of its state; its data position is judged by its inputs).
    unreported_consumed_samples: ClassVar[str]

    def fit_problems(self, recipe: type) -> list[str]:
        """Problems of the recipe's training runs beyond what its hooks build (stop-and-go only)."""
    def world_size(self, recipe: type) -> int:
        """Rank processes per run of the recipe."""
    def runs_in_process(self, recipe: type) -> bool:
        """Whether the recipe's runs may happen in the test process (otherwise each is a set of rank processes)."""
    def run_fits(self, recipe: type, plans: Sequence[FitPlan], *, in_process: bool, deadline_s: float
                 ) -> list[list[RunOutcome]]:
        """Run ``plans`` one after the other; each run's outcome per rank."""
    def saved_checkpoint(self, path: Path) -> Path | None:
        """Where the interrupted run's checkpoint asked for at ``path`` was written, or None if it was not."""
    def checkpoint_problems(self, path: Path, records: Sequence[RecordStore], stop_step: int
                            ) -> tuple[str, list[str]]:
        """(what was verified, in a few words; every problem) of the checkpoint at ``path`` against the records
        of the run that saved it; raises :class:`CheckpointUnreadable` when it cannot be read safely."""
    def remedies(self) -> Mapping[str, str]:
        """Stream name -> the remedy in this backend's terms, where it says more than the stream table's."""
    def hints(self) -> Mapping[str, str]:
        """Stream name -> why a run recorded nothing in it, in this backend's terms."""


class CheckpointUnreadable(Exception):
    """A checkpoint cannot be read with weights-only loading; the message says why and what to store instead."""
