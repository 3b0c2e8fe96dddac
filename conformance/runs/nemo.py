"""NeMo 2 runs: which recipes train with NeMo's ``MegatronStrategy``, the Trainer they get, and where they run.

A recipe opts in by returning ``nemo.lightning.MegatronStrategy(...)`` as ``trainer_kwargs()['strategy']``. Its runs
then use ``nemo.lightning.Trainer`` (:mod:`conformance.runs.trainer`) and happen in the kit's rank processes only. On CUDA NeMo runs as it is; on the
CPU it runs under :mod:`conformance.runs.nemo_cpu_emulation`, named in every report. Importing this module never
imports NeMo.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

__all__ = ["is_nemo_strategy", "run_environment", "saved_checkpoint", "strategy_context"]

_STRATEGY_MODULE = "nemo.lightning.pytorch.strategies.megatron_strategy"


def is_nemo_strategy(strategy: Any) -> bool:
    """Whether ``strategy`` is NeMo's ``MegatronStrategy`` (or a subclass); False where NeMo was never imported."""
    module = sys.modules.get(_STRATEGY_MODULE)
    return module is not None and isinstance(strategy, module.MegatronStrategy)


def run_environment(strategy: Any, accelerator: Any) -> str | None:
    """How reports must qualify runs with this strategy and accelerator: the emulation's label for NeMo's strategy on
    the CPU, otherwise None (the runs are what they say)."""
    if is_nemo_strategy(strategy) and accelerator == "cpu":
        from conformance.runs.nemo_cpu_emulation import LABEL

        return LABEL
    return None


def strategy_context(strategy: Any, accelerator: Any) -> contextlib.AbstractContextManager[None]:
    """What a rank process must run a fit or predict with this strategy and accelerator inside: the CPU emulation
    for NeMo's strategy on the CPU, otherwise nothing."""
    if run_environment(strategy, accelerator) is None:
        return contextlib.nullcontext()
    from conformance.runs.nemo_cpu_emulation import cuda_on_cpu

    return cuda_on_cpu()


def saved_checkpoint(path: Path) -> Path | None:
    """Where ``trainer.save_checkpoint(path)`` put the checkpoint: the file ``path``, or the directory NeMo's
    strategy writes instead (``path`` without its ``.ckpt`` suffix); None if neither exists."""
    if path.is_file():
        return path
    directory = path.with_suffix("") if path.suffix == ".ckpt" else path
    return directory if directory.is_dir() else None
