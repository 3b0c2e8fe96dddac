"""The one place a Lightning ``Trainer`` is built for a conformance run: the kit's defaults, then the recipe's
``trainer_kwargs()``, then what the kind of run owns. Also how runs are seeded and kept quiet.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from conformance.errors import ConformanceSetupError

__all__ = ["TRAINER_DEFAULTS", "build_trainer", "quiet_lightning", "seeded"]

#: Trainer defaults that keep conformance runs quiet and cheap; a recipe's ``trainer_kwargs()`` overrides them.
TRAINER_DEFAULTS: dict[str, Any] = {
    "accelerator": "cpu",
    "devices": 1,
    "logger": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
}


def build_trainer(recipe_kwargs: Mapping[str, Any], *, owned: frozenset[str], run_settings: Mapping[str, Any],
                  run_defaults: Mapping[str, Any] | None = None) -> pl.Trainer:
    """A Trainer from :data:`TRAINER_DEFAULTS` < ``run_defaults`` < ``recipe_kwargs`` < ``run_settings``.

    ``owned`` names the arguments this kind of run controls (``run_settings`` sets some of them); a recipe that sets
    one of them is a set-up mistake.
    """
    clash = sorted(owned & set(recipe_kwargs))
    if clash:
        raise ConformanceSetupError(f"trainer_kwargs() sets {clash}, which this conformance run controls itself; "
                                    "remove them")
    return pl.Trainer(**{**TRAINER_DEFAULTS, **(run_defaults or {}), **recipe_kwargs, **run_settings})


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed every RNG as a training script would (``seed_everything``); the seed it exports to the environment
    does not outlive the run."""
    saved = {name: os.environ.get(name) for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    try:
        pl.seed_everything(seed, verbose=False)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
