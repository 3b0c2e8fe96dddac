"""One rank of a probe run over a recipe's stateful loader, iterated by the kit's own epoch loop.

The loop is the one a training script writes around a loader: per epoch the recipe's ``start_epoch(loader,
epoch)``, then ``for batch in loader``, one batch per optimizer step. An interrupted run saves, after its stop step,
``{"epoch", "step", "loader": loader.state_dict()}`` of each rank with ``torch.save`` (one file per rank: a
loader's state is its rank's own position) and dies as a pre-empted job. A resumed run builds a fresh loader, loads
that state with ``torch.load(weights_only=True)`` and ``load_state_dict`` before anything iterates it, and goes on
in the saved epoch. Every run is seeded like a training script that calls ``seed_everything(0)`` at its start.

    python -m conformance.runs.loader.probe SPEC.json    # one rank of a multi-process run (used internally)
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from conformance.runs.data_probe import ProbeLog, ProbePlan
from conformance.runs.processes import SimulatedPreemption, recipe_rank_main
from conformance.runs.rank_jobs import run_recipe_ranks
from conformance.training.rng import seed_everything

__all__ = ["loader_checkpoint", "quiet_torchdata", "run_loader_probe"]

#: Beyond this many consecutive epochs without a batch the loader is judged empty (a resumed run's first epoch may
#: legitimately have nothing left).
_EMPTY_EPOCHS = 2


def loader_checkpoint(checkpoint: Path, rank: int) -> Path:
    """The file one rank's loader state is saved to (with ``torch.save``) inside a run's checkpoint folder."""
    return checkpoint / f"loader-rank{rank}.state"


@contextlib.contextmanager
def quiet_torchdata() -> Iterator[None]:
    """torchdata 0.11's deprecation warning on torch 2.13, printed by every ``StatefulDataLoader()``, off."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'set_vital' is deprecated")
        yield


def run_loader_probe(recipe: type, plan: ProbePlan) -> list[ProbeLog]:
    """Run ``plan`` on ``recipe`` (a class with ``make_loader``/``sample_ids``/``start_epoch`` hooks): in this
    process for one rank, otherwise in ``plan.world_size`` fresh processes; one log per rank."""
    if plan.world_size == 1:
        return [_run_rank(recipe, plan, rank=0)]
    return run_recipe_ranks(__name__, recipe, plan, plan.world_size, ProbeLog, owner_of="make_loader")


def _run_rank(recipe: type, plan: ProbePlan, rank: int) -> ProbeLog:
    log = ProbeLog(rank=rank)
    try:
        with quiet_torchdata():
            seed_everything(0)
            loader = recipe.make_loader(rank, plan.world_size, plan.num_workers or 0)
            epoch, step = 0, 0
            if plan.resume_from is not None:
                saved = torch.load(loader_checkpoint(Path(plan.resume_from), rank), weights_only=True)
                loader.load_state_dict(saved["loader"])
                epoch, step = int(saved["epoch"]), int(saved["step"])
            _iterate(recipe, loader, plan, rank, log, epoch, step)
    except SimulatedPreemption:
        pass
    except Exception as exc:  # noqa: BLE001 - the loader's failure is a finding the checks report
        log.record_failure(exc)
    return log


def _iterate(recipe: type, loader: Any, plan: ProbePlan, rank: int, log: ProbeLog, epoch: int, step: int) -> None:
    """The epoch loop from (``epoch``, ``step``) to the end of ``plan.max_epochs`` or the interruption."""
    empty = 0
    while epoch < plan.max_epochs:
        recipe.start_epoch(loader, epoch)
        drawn = 0
        for batch in loader:
            log.train.append((step, epoch, recipe.sample_ids(batch)))
            step, drawn = step + 1, drawn + 1
            if step == plan.stop_after_step:
                folder = Path(plan.checkpoint)
                folder.mkdir(parents=True, exist_ok=True)
                torch.save({"epoch": epoch, "step": step, "loader": loader.state_dict()},
                           loader_checkpoint(folder, rank))
                raise SimulatedPreemption(f"simulated preemption after optimizer step {step}")
        empty = empty + 1 if drawn == 0 else 0
        if empty >= _EMPTY_EPOCHS:
            raise RuntimeError(f"epochs {epoch - 1} and {epoch} yielded no batch: the loader is empty")
        epoch += 1


if __name__ == "__main__":
    recipe_rank_main(_run_rank, ProbePlan)
