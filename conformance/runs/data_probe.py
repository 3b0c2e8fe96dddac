"""The one protocol of DataModuleResumeConformance's backends: how the kit draws a recipe's training samples in
order, interrupted and resumed, whatever builds the loader (a Lightning data module, or a stateful loader factory
the kit iterates itself); what every probe run reports (:class:`ProbeLog`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from conformance.runs.backend import RecipeBackend
from conformance.runs.processes import RankLog

__all__ = ["MAX_STATE_BYTES", "DataBackend", "DataCapabilities", "ProbeLog", "ProbePlan", "consumed_problems"]

#: The data's resume state must stay this small: it is checkpointed with every save.
MAX_STATE_BYTES = 64 * 1024


@dataclass(frozen=True)
class ProbePlan:
    """One probe run: how long, on how many ranks, with how many loader workers, interrupted or resumed."""

    max_epochs: int
    world_size: int = 1
    num_workers: int | None = None
    stop_after_step: int | None = None
    checkpoint: str | None = None
    resume_from: str | None = None


@dataclass
class ProbeLog(RankLog):
    """What one rank of a probe run saw."""

    train: list[tuple[int, int, list[int]]] = field(default_factory=list)  # (global step, epoch, ids)
    valid: list[tuple[int, int, list[int]]] = field(default_factory=list)  # (global step, batch index, ids)
    start_state: dict[str, Any] | None = None


@dataclass(frozen=True)
class DataCapabilities:
    """What the data under test declares, read once per class from a freshly built object."""

    #: Samples per optimizer step over all ranks (None when the data does not say).
    global_batch_size: int | None
    #: ``supports_elastic_resume``: True, False, or None when the data does not say. False declares that a
    #: checkpoint resumes only on the data-parallel size it was saved on: ``test_elastic_resume`` then requires
    #: the documented refusal (:class:`conformance.ElasticResumeRefused`). True and None (undeclared) require the
    #: same global sample stream on 1 and 2 ranks; a refusal then fails with a hint to declare False.
    supports_elastic_resume: bool | None
    #: Whether the order of the samples depends on the number of loader workers by design (an iterable dataset:
    #: each worker yields its own share, interleaved batch by batch). Map-style data keeps the sampler's order.
    order_depends_on_workers: bool = False
    #: ``file:qualified name`` of the data's own restore methods (``load_state_dict`` of its classes, not of a
    #: framework's or the kit's): an error raised through one of them before any resumed batch is the data's own
    #: refusal to resume, whatever its type.
    restore_functions: frozenset[str] = frozenset()


class DataBackend(RecipeBackend, Protocol):
    """How the kit builds, iterates, interrupts and resumes a recipe's training data."""

    #: Why this backend's data keeps no consumed-samples count (the checks leave that part out and say so), or None
    #: when it keeps one in its state (the checks then verify it after every resume).
    unreported_consumed_samples: ClassVar[str | None]

    def capabilities(self, recipe: type) -> DataCapabilities:
        """What a freshly built instance of the recipe's data declares."""
    def run_probe(self, recipe: type, plan: ProbePlan) -> list[ProbeLog]:
        """Run ``plan``: one log per rank of the samples drawn, step by step."""
    def checkpoint_state_problems(self, recipe: type, checkpoint: Path, step: int) -> list[str]:
        """Problems of the data's state as saved at ``checkpoint`` after optimizer step ``step``."""
    def saved_consumed_samples(self, recipe: type, checkpoint: Path) -> Any:
        """The consumed-samples count the data's state at ``checkpoint`` holds (None when it holds none)."""


def consumed_problems(where: str, step: int, consumed: Any, global_batch_size: int | None) -> list[str]:
    """A problem unless ``consumed`` equals ``step`` global batches of samples."""
    expected = step * global_batch_size if global_batch_size is not None else None
    if consumed == expected:
        return []
    return [f"{where} consumed_samples={consumed!r}, expected {step} x {global_batch_size} = {expected}"]
