"""Drive a data module through real Lightning fits with a probe model that only records which samples it gets.

One probe run trains a one-parameter model (loss ``0 * weight``, SGD with learning rate 0) on the adopter's data
module, with gradient accumulation matching the data module's global batch size, validating after every optimizer
step. It records every training micro-batch's sample ids with its global step and epoch, every validation batch's
ids, and the data module's state when training starts. It can save a checkpoint after a step and crash (as a
pre-empted job), or resume from a checkpoint. Runs with ``world_size > 1`` are real processes joined by gloo.

A recipe whose ``trainer_kwargs()['strategy']`` is NeMo's MegatronStrategy is probed under that strategy instead,
with :class:`~conformance.runs.nemo.probe.NeMoSampleProbe` (NeMo runs the micro-batches of a step itself), always
in rank processes (:mod:`conformance.runs.nemo.strategy`).

    python -m conformance.runs.lightning.probe SPEC.json    # one rank of a multi-process run (used internally)
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from conformance.runs.data_probe import ProbeLog, ProbePlan
from conformance.runs.lightning.callbacks import InterruptAfterStep, Interruption, SimulatedPreemption, StallGuard
from conformance.runs.lightning.sample_probe import SampleProbe
from conformance.runs.lightning.trainer import build_trainer, quiet_lightning, run_context, seeded
from conformance.runs.nemo.strategy import is_nemo_strategy
from conformance.runs.processes import recipe_rank_main
from conformance.runs.rank_jobs import run_recipe_ranks
from conformance.training.checkpoints import saved_checkpoint

__all__ = ["OWNED_TRAINER_KWARGS", "accumulation_steps", "run_probe", "strategy_problems"]

#: Trainer arguments a probe run sets itself; a recipe's ``trainer_kwargs()`` may not set them.
#: A recipe may set ``strategy`` only to NeMo's MegatronStrategy (:func:`strategy_problems`).
OWNED_TRAINER_KWARGS = frozenset({
    "devices", "num_nodes", "max_epochs", "max_steps", "accumulate_grad_batches", "val_check_interval",
    "callbacks", "use_distributed_sampler", "enable_checkpointing", "default_root_dir",
})


def strategy_problems(trainer_kwargs: dict[str, Any]) -> list[str]:
    """Why the probe cannot run under ``trainer_kwargs()['strategy']``: only NeMo's MegatronStrategy without model
    parallelism may be given (the probe checks data order, not the model)."""
    if "strategy" not in trainer_kwargs:
        return []
    strategy = trainer_kwargs["strategy"]
    if not is_nemo_strategy(strategy):
        return [(f"trainer_kwargs() sets strategy={strategy!r}, but probe runs use the kit's own strategy; only NeMo's "
                "MegatronStrategy may be given (the probe then runs under it): remove it")]
    sizes = {name: getattr(strategy, name, 1) for name in ("tensor_model_parallel_size",
                                                            "pipeline_model_parallel_size",
                                                            "context_parallel_size")}
    if any(size != 1 for size in sizes.values()):
        return [(f"trainer_kwargs()'s MegatronStrategy sets {sizes}; the probe checks data order on data-parallel "
                "ranks only: give it a MegatronStrategy with every model-parallel size 1")]
    return []


def run_probe(recipe: type, plan: ProbePlan) -> list[ProbeLog]:
    """Run ``plan`` on ``recipe`` (a class with ``make_datamodule``/``sample_ids`` hooks); one log per rank."""
    under_nemo = is_nemo_strategy(recipe.trainer_kwargs().get("strategy"))
    if plan.world_size == 1 and not under_nemo:
        return [_run_rank(recipe, plan, rank=0)]
    try:
        accumulation_steps(recipe.make_datamodule(), plan.world_size)  # fail fast, before starting processes
    except (AttributeError, ValueError) as exc:
        return [ProbeLog(rank=rank, error=f"{type(exc).__name__}: {exc}") for rank in range(plan.world_size)]
    # NeMo's strategy needs the recipe's own trainer_kwargs() in the rank: import the class itself
    return run_recipe_ranks(__name__, recipe, plan, plan.world_size, ProbeLog,
                            owner_of="" if under_nemo else "make_datamodule")


def _run_rank(recipe: type, plan: ProbePlan, rank: int) -> ProbeLog:
    log = ProbeLog(rank=rank)
    recipe_kwargs = dict(recipe.trainer_kwargs())
    try:
        datamodule = recipe.make_datamodule()
        if plan.num_workers is not None:
            recipe.set_num_workers(datamodule, plan.num_workers)
        accumulation = accumulation_steps(datamodule, plan.world_size)
        callbacks: list[pl.Callback] = [StallGuard()]
        if plan.stop_after_step is not None:
            callbacks.append(InterruptAfterStep(Interruption(plan.stop_after_step, "crash", Path(plan.checkpoint))))
        if is_nemo_strategy(recipe_kwargs.get("strategy")):
            from conformance.runs.nemo.probe import NeMoSampleProbe

            # NeMo runs a step's micro-batches inside one Lightning batch; its strategy splits data-parallel ranks
            probe: SampleProbe = NeMoSampleProbe(recipe.sample_ids, log)
            steps = {"accumulate_grad_batches": 1, "val_check_interval": 1}
        else:
            probe = SampleProbe(recipe.sample_ids, log)
            steps = {"accumulate_grad_batches": accumulation, "val_check_interval": accumulation,
                     **({"strategy": "ddp"} if plan.world_size > 1 else {})}
        resume_from = plan.resume_from and saved_checkpoint(Path(plan.resume_from))
        with quiet_lightning(), seeded(0), run_context(recipe_kwargs):
            trainer = build_trainer(recipe_kwargs, owned=OWNED_TRAINER_KWARGS, run_defaults={
                "limit_val_batches": 2,
            }, run_settings={
                "devices": plan.world_size, "max_epochs": plan.max_epochs, "callbacks": callbacks,
                "use_distributed_sampler": False, "enable_checkpointing": False,
                "default_root_dir": tempfile.gettempdir(), **steps,
            })
            try:
                trainer.fit(probe, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
            except SimulatedPreemption:
                pass
    except Exception as exc:  # noqa: BLE001 - the data module's failure is a finding the checks report
        log.record_failure(exc)
    return log


def accumulation_steps(datamodule: Any, world_size: int) -> int:
    """Micro-batches per optimizer step on each of ``world_size`` ranks; raises if the sizes do not divide."""
    missing = [name for name in ("micro_batch_size", "global_batch_size") if not hasattr(datamodule, name)]
    if missing:
        raise AttributeError(
            f"{type(datamodule).__qualname__} has no {' or '.join(missing)}: data-module conformance needs "
            "Megatron-style batch sizes; set micro_batch_size and global_batch_size as attributes"
        )
    micro, global_ = int(datamodule.micro_batch_size), int(datamodule.global_batch_size)
    accumulation, remainder = divmod(global_, micro * world_size)
    if remainder or accumulation == 0:
        raise ValueError(
            f"global_batch_size {global_} is not a multiple of micro_batch_size x world size = {micro} x "
            f"{world_size}: this world size cannot split the global batch; choose sizes that divide"
        )
    return accumulation


if __name__ == "__main__":
    recipe_rank_main(_run_rank, ProbePlan)
