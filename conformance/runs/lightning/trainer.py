"""The one place a Lightning ``Trainer`` is built for a conformance run: the kit's defaults, then the recipe's
``trainer_kwargs()``, then what the kind of run owns. Also how runs are seeded and kept quiet.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from conformance._environment import environment_restored
from conformance.errors import ConformanceSetupError
from conformance.runs.nemo.strategy import is_nemo_strategy, run_environment, strategy_context

__all__ = ["TRAINER_DEFAULTS", "build_trainer", "environment_label", "quiet_lightning", "rank_process_strategy",
           "run_context", "seeded", "world_size_of"]

#: Trainer defaults that keep conformance runs quiet and cheap; a recipe's ``trainer_kwargs()`` overrides them. The
#: accelerator is the CPU unless ``CONFORMANCE_ACCELERATOR`` names another (``tox -e gpu`` sets ``gpu``).
TRAINER_DEFAULTS: dict[str, Any] = {
    "accelerator": os.environ.get("CONFORMANCE_ACCELERATOR", "cpu"),
    "devices": 1,
    "logger": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
}


def build_trainer(recipe_kwargs: Mapping[str, Any], *, owned: frozenset[str], run_settings: Mapping[str, Any],
                  run_defaults: Mapping[str, Any] | None = None) -> pl.Trainer:
    """A Trainer from :data:`TRAINER_DEFAULTS` < ``run_defaults`` < ``recipe_kwargs`` < ``run_settings`` (NeMo's
    Trainer for NeMo's strategy).

    ``owned`` names the arguments this kind of run controls (``run_settings`` sets some of them); a recipe that sets
    one of them is a set-up mistake.
    """
    clash = sorted(owned & set(recipe_kwargs))
    if clash:
        raise ConformanceSetupError(f"trainer_kwargs() sets {clash}, which this conformance run controls itself; "
                                    "remove them")
    kwargs = {**TRAINER_DEFAULTS, **(run_defaults or {}), **recipe_kwargs, **run_settings}
    if is_nemo_strategy(kwargs.get("strategy")):
        from nemo.lightning import Trainer as NeMoTrainer  # records the run's configuration in NeMo's checkpoints

        return NeMoTrainer(**kwargs)
    return pl.Trainer(**kwargs)


def run_context(trainer_kwargs: Mapping[str, Any]) -> contextlib.AbstractContextManager[None]:
    """What a rank process runs a fit with ``trainer_kwargs()`` inside (see
    :func:`conformance.runs.nemo.strategy.strategy_context`)."""
    return strategy_context(trainer_kwargs.get("strategy"), _accelerator(trainer_kwargs))


def environment_label(trainer_kwargs: Mapping[str, Any]) -> str | None:
    """How every report must qualify runs with ``trainer_kwargs()``: "NeMo strategy on CPU emulation", or None
    when the runs are what they say (see :func:`conformance.runs.nemo.run_environment`)."""
    return run_environment(trainer_kwargs.get("strategy"), _accelerator(trainer_kwargs))


def _accelerator(trainer_kwargs: Mapping[str, Any]) -> Any:
    return trainer_kwargs.get("accelerator", TRAINER_DEFAULTS["accelerator"])


def world_size_of(trainer_kwargs: Mapping[str, Any]) -> int:
    """The number of rank processes ``trainer_kwargs`` ask for (``devices`` on one node); raises
    :class:`ConformanceSetupError` when it cannot be told from them."""
    devices = trainer_kwargs.get("devices", TRAINER_DEFAULTS["devices"])
    nodes = trainer_kwargs.get("num_nodes", 1)
    if nodes != 1:
        raise ConformanceSetupError(f"trainer_kwargs() sets num_nodes={nodes!r}; conformance runs launch every rank "
                                    "on this machine: use num_nodes=1 and devices=<ranks>")
    if isinstance(devices, (list, tuple)) and devices:
        return len(devices)
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    if devices == "auto" and trainer_kwargs.get("accelerator", TRAINER_DEFAULTS["accelerator"]) == "cpu":
        return 1
    if isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1:
        return devices
    raise ConformanceSetupError(f"trainer_kwargs() sets devices={devices!r}; conformance runs need to know how many "
                                "rank processes to launch: set devices to a positive int (or a list of device ids)")


def rank_process_strategy(strategy: Any, timeout_s: float) -> Any:
    """``strategy`` (``trainer_kwargs()['strategy']``) for a rank process the kit launched itself.

    Named DDP strategies (``"ddp"``, ``"ddp_spawn"``, ...; ``"auto"`` means DDP for several devices) become
    ``DDPStrategy`` with their registered options, Lightning's external-launch mode (``start_method="popen"``) and
    a process-group timeout of ``timeout_s``: the same training, without Lightning starting processes of its own.
    DDPStrategy objects (subclasses included) left at the default timeout get ``timeout_s`` too; other strategies
    are used as given; a DDPStrategy object that starts its own processes is a set-up error.
    """
    timeout = timedelta(seconds=timeout_s)
    if strategy == "auto":
        return DDPStrategy(timeout=timeout)
    if isinstance(strategy, str) and strategy in StrategyRegistry \
            and issubclass(StrategyRegistry[strategy]["strategy"], DDPStrategy):
        options = {**StrategyRegistry[strategy]["init_params"], "start_method": "popen", "timeout": timeout}
        return StrategyRegistry[strategy]["strategy"](**options)
    start_method = getattr(strategy, "_start_method", "popen")
    if isinstance(strategy, DDPStrategy) and start_method != "popen":
        raise ConformanceSetupError(
            f"trainer_kwargs() passes {type(strategy).__name__}(start_method={start_method!r}), which starts processes "
            "of its own; conformance runs launch every rank themselves: use start_method='popen' (the default)")
    if isinstance(strategy, DDPStrategy) and getattr(strategy, "_timeout", None) == default_pg_timeout:
        strategy._timeout = timeout  # a rank that hangs fails its peers in seconds, not in gloo's 30 minutes
    return strategy


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed every RNG as a training script would (``seed_everything``); the seed it exports to the environment
    does not outlive the run."""
    with environment_restored(("PL_GLOBAL_SEED", "PL_SEED_WORKERS")):
        pl.seed_everything(seed, verbose=False)
        yield


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's info chatter and generic performance hints during kit runs; other warnings pass."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=PossibleUserWarning)
            # Lightning 2.6 on torch 2.13 warns about its own pytree use on every fit; nothing a recipe can fix.
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            yield
    finally:
        logger.setLevel(level)
