"""The tensors a recipe's Lightning callbacks hold (an EMA's shadow weights, SWA's averaged model, a best score):
state a resume must give back whether or not the callback checkpoints it.

It reads the callbacks' attributes and never calls their ``state_dict()``: that may be collective (the kit's
:class:`RNGStateCallback` gathers every rank's stream) or hold what differs between two correct runs (the paths a
``ModelCheckpoint`` wrote, the seconds a ``Timer`` counted). Checkpoint callbacks, whose bookkeeping is about files,
and the kit's own callbacks, whose state other checks cover, are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint

from conformance.runs.lightning.rng_callback import RNGStateCallback

__all__ = ["callback_tensors"]


def callback_tensors(callbacks: Iterable[pl.Callback]) -> dict[str, dict[str, Any]]:
    """Per callback (by its ``state_key``), every attribute that is or holds tensors or arrays (a module as its
    ``state_dict()``, a container as its tensor-holding items); a callback holding none has an empty entry."""
    return {callback.state_key: {name: _held(value) for name, value in vars(callback).items()
                                 if not name.startswith("__") and _holds_tensors(value)}
            for callback in callbacks if not isinstance(callback, (Checkpoint, RNGStateCallback))}


def _holds_tensors(value: Any) -> bool:
    if isinstance(value, (torch.Tensor, np.ndarray, torch.nn.Module)):
        return True
    if isinstance(value, Mapping):
        return any(_holds_tensors(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_tensors(item) for item in value)
    return False


def _held(value: Any) -> Any:
    """The tensor-holding part of ``value``: a module's ``state_dict()``, a container's tensor-holding items."""
    if isinstance(value, torch.nn.Module):
        return value.state_dict()
    if isinstance(value, Mapping):
        return {key: _held(item) for key, item in value.items() if _holds_tensors(item)}
    if isinstance(value, (list, tuple)):
        return {index: _held(item) for index, item in enumerate(value) if _holds_tensors(item)}
    return value
