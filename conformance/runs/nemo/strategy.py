"""NeMo 2 runs: which recipes train with NeMo's ``MegatronStrategy``, the Trainer they get, and where they run.

A recipe opts in by returning ``nemo.lightning.MegatronStrategy(...)`` as ``trainer_kwargs()['strategy']``. Its runs
then use ``nemo.lightning.Trainer`` (:mod:`conformance.runs.lightning.trainer`) and happen in the kit's rank processes only.
On CUDA NeMo runs as it is; on the CPU it runs under :mod:`conformance.runs.nemo.cpu_emulation`, named in every
report. Importing this module never imports NeMo.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

__all__ = ["is_nemo_strategy", "recipe_problems", "run_environment", "strategy_context"]

_STRATEGY_MODULE = "nemo.lightning.pytorch.strategies.megatron_strategy"


def is_nemo_strategy(strategy: Any) -> bool:
    """Whether ``strategy`` is NeMo's ``MegatronStrategy`` (or a subclass); False where NeMo was never imported."""
    module = sys.modules.get(_STRATEGY_MODULE)
    return module is not None and isinstance(strategy, module.MegatronStrategy)


def run_environment(strategy: Any, accelerator: Any) -> str | None:
    """How reports must qualify runs with this strategy and accelerator: the emulation's label for NeMo's strategy on
    the CPU, otherwise None (the runs are what they say)."""
    if is_nemo_strategy(strategy) and accelerator == "cpu":
        from conformance.runs.nemo.cpu_emulation import LABEL

        return LABEL
    return None


def strategy_context(strategy: Any, accelerator: Any) -> contextlib.AbstractContextManager[None]:
    """What a rank process must run a fit or predict with this strategy and accelerator inside: the CPU emulation
    for NeMo's strategy on the CPU, otherwise nothing."""
    if run_environment(strategy, accelerator) is None:
        return contextlib.nullcontext()
    from conformance.runs.nemo.cpu_emulation import cuda_on_cpu

    return cuda_on_cpu()


def recipe_problems(strategy: Any, world_size: int, model: Any, datamodule: Any) -> list[str]:
    """Set-up mistakes of a recipe on NeMo's strategy, found before anything trains (NeMo itself reports each deep
    inside its set-up, or, for an asynchronous save, only when the resume finds no checkpoint)."""
    if not is_nemo_strategy(strategy):
        return []
    problems = []
    sizes = {name: getattr(strategy, name, 1) or 1 for name in (
        "tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size")}
    model_parallel = sizes["tensor_model_parallel_size"] * sizes["pipeline_model_parallel_size"] \
        * sizes["context_parallel_size"]
    if world_size % model_parallel:
        given = ", ".join(f"{name}={size}" for name, size in sizes.items())
        problems.append(f"trainer_kwargs() asks for {world_size} device(s), but its MegatronStrategy({given}) needs a "
                        f"multiple of {model_parallel} ranks: set devices to a multiple of the model-parallel sizes' "
                        "product")
    if getattr(strategy, "async_save", False):
        problems.append("trainer_kwargs()'s MegatronStrategy saves checkpoints asynchronously (ckpt_async_save=True, "
                        "its default): the interrupted run ends before its checkpoint is complete, and the resume "
                        "finds none. Pass MegatronStrategy(ckpt_async_save=False)")
    sampler = getattr(datamodule, "data_sampler", None)
    micro, global_ = getattr(sampler, "micro_batch_size", None), getattr(sampler, "global_batch_size", None)
    data_parallel = world_size // model_parallel if not world_size % model_parallel else None
    if isinstance(micro, int) and isinstance(global_, int) and data_parallel and global_ % (micro * data_parallel):
        problems.append(f"make_datamodule()'s data_sampler has global_batch_size {global_}, not a multiple of "
                        f"micro_batch_size {micro} x {data_parallel} data-parallel rank(s): choose sizes that divide")
    if all(getattr(model, name, None) is None for name in ("training_loss_reduction", "loss_reduction")):
        problems.append(f"make_model() returns a {type(model).__qualname__} without training_loss_reduction (or "
                        "loss_reduction): NeMo's strategy reduces each micro-batch's training_step output with it; "
                        "give the model one (e.g. nemo.lightning.megatron_parallel.MaskedTokenLossReduction)")
    return problems
