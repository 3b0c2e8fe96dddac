"""Set-up mistakes of a Lightning recipe found before anything trains: its callbacks, its accelerator, what its data
module needs. Each function returns problems, one sentence each, naming the hook and the fix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch

from conformance._setup_checks import built_object_problems, described
from conformance.training.data import ResumableDataModule

__all__ = ["accelerator_problems", "callback_list_problems", "distributed_sampler_problems", "writer_problems"]


def callback_list_problems(build: Callable[[], Any]) -> list[str]:
    """``make_callbacks()`` must return a list of fresh Lightning callbacks."""
    first, second = build(), build()
    if isinstance(first, pl.Callback):
        return [(f"make_callbacks() returned a {type(first).__qualname__}, not a list: return "
                f"[{type(first).__qualname__}(...)]")]
    if not isinstance(first, (list, tuple)) or not all(isinstance(item, pl.Callback) for item in first):
        return [f"make_callbacks() returned {described(first)}: return a list of lightning.pytorch.Callback objects"]
    shared = [type(item).__qualname__ for item in first if any(item is other for other in second)]
    if shared:
        return [(f"make_callbacks() returned the same {', '.join(shared)} object on two calls: create new callbacks on "
                "every call (a shared callback carries its state from one run into the next)")]
    return []


def accelerator_problems(trainer_kwargs: dict[str, Any]) -> list[str]:
    """The accelerator ``trainer_kwargs()`` asks for must be available on this machine."""
    requested = trainer_kwargs.get("accelerator", "cpu")
    name = requested if isinstance(requested, str) else type(requested).__name__
    if isinstance(requested, str):
        if requested in ("auto", "cpu"):
            return []
        available = {"gpu": torch.cuda.is_available() or torch.backends.mps.is_available(),
                     "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}.get(requested)
        if available is None:
            from lightning.pytorch.accelerators import AcceleratorRegistry

            available = requested in AcceleratorRegistry and AcceleratorRegistry.get(requested).is_available()
    else:
        available = bool(getattr(requested, "is_available", lambda: True)())
    if available:
        return []
    return [(f"trainer_kwargs() asks for accelerator={name!r}, which is not available on this machine: run the "
            "class where it is (e.g. `tox -e gpu` on a GPU machine), or ask for 'cpu' or 'auto'")]


def distributed_sampler_problems(trainer_kwargs: dict[str, Any], datamodule: Any) -> list[str]:
    """On several ranks a ResumableDataModule splits every global batch itself: Lightning must not add its own
    DistributedSampler (it refuses to wrap the batch sampler anyway, deep inside ``fit``)."""
    if isinstance(datamodule, ResumableDataModule) and trainer_kwargs.get("use_distributed_sampler", True):
        return [(f"{type(datamodule).__qualname__} is a ResumableDataModule, which gives every data-parallel rank its "
                 "slice of each global batch itself: add use_distributed_sampler=False to trainer_kwargs()")]
    return []


def writer_problems(build: Callable[[], Any]) -> list[str]:
    """``make_writer(output_dir)`` must return a fresh Lightning callback."""
    return built_object_problems("make_writer(output_dir)", build, pl.Callback, (
        "return a Lightning callback (a lightning.pytorch.callbacks.BasePredictionWriter) writing into "
        "output_dir"))[0]
