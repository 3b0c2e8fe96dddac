"""Start a recipe's run in rank processes with the launcher its class chooses (see
:mod:`conformance.runs.launchers`): the kit's own (:class:`~conformance.runs.processes.RankJob`) or torchrun
(:class:`~conformance.runs.torchrun_job.TorchrunJob`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from conformance.runs.launchers import launcher_for
from conformance.runs.processes import Log, RankJob, finish_jobs, importable_name
from conformance.runs.torchrun_job import TorchrunJob

__all__ = ["run_recipe_ranks", "start_recipe_job"]


def run_recipe_ranks(module: str, recipe: type, plan: Any, world_size: int, log_type: type[Log], *,
                     deadline_s: float = 300, owner_of: str = "make_datamodule") -> list[Log]:
    """Run ``plan`` of ``recipe`` in ``world_size`` processes of ``python -m module``; one log per rank."""
    job = start_recipe_job(module, recipe, plan, world_size, deadline_s=deadline_s, owner_of=owner_of)
    finish_jobs([job])
    return [exit_.as_log(log_type) for exit_ in job.exits()]


def start_recipe_job(module: str, recipe: type, plan: Any, world_size: int, *, deadline_s: float,
                     owner_of: str = "make_datamodule") -> RankJob:
    """Start ``plan`` of ``recipe`` in ``world_size`` processes of ``python -m module`` (see :class:`RankJob`)."""
    payload = {"recipe": importable_name(recipe, owner_of), "plan": dataclasses.asdict(plan)}
    launcher = launcher_for(getattr(recipe, "launcher", None))
    if launcher.kind == "torchrun":
        return TorchrunJob(module, payload, world_size, deadline_s=deadline_s, launcher=launcher)
    return RankJob(module, payload, world_size, deadline_s=deadline_s)
