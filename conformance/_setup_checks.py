"""Set-up mistakes of any backend found before anything trains: the mixin order, what a hook builds, batch sizes.
Each function returns problems, one sentence each, naming the hook and the fix."""

from __future__ import annotations

import unittest
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader

from conformance.training.data import ResumableDataModule

__all__ = ["batch_size_problems", "built_object_problems", "described", "mixin_order_problem",
           "resumable_datamodule_problems"]


def mixin_order_problem(cls: type, suite: type) -> str | None:
    """Why ``cls`` lists ``unittest.TestCase`` before the conformance mixin (its set-up would never run), or None."""
    mro = cls.__mro__
    if unittest.TestCase not in mro or mro.index(unittest.TestCase) > mro.index(suite):
        return None
    mixin = next(base for base in mro if base is not suite and issubclass(base, suite) and "_suite_checks" in vars(base))
    bases = ", ".join(base.__name__ for base in cls.__bases__)
    return (f"class {cls.__qualname__}({bases}) lists unittest.TestCase before {mixin.__name__}, so the kit's "
            "set-up never runs: list the mixin (and any mixin of your hooks) first and unittest.TestCase last, "
            f"e.g. class {cls.__qualname__}({mixin.__name__}, unittest.TestCase)")


def built_object_problems(hook: str, build: Callable[[], Any], expected: type, fix: str) -> tuple[list[str], Any]:
    """Call ``build`` twice: the result must be an ``expected`` and a fresh object each time. Returns the problems
    and the first object built."""
    first, second = build(), build()
    if not isinstance(first, expected):
        return [f"{hook} returned {described(first, expected)}, not a {expected.__qualname__}: {fix}"], first
    if first is second:
        return [(f"{hook} returned the same {type(first).__qualname__} object twice: build a new one on every call, "
                "since every run of the kit starts from its own (a shared one carries state from run to run)")], first
    return [], first


def batch_size_problems(datamodule: Any, *, divisible_by_ranks: int = 1, why: str = "") -> list[str]:
    """Megatron-style batch sizes: ``micro_batch_size`` and ``global_batch_size`` positive ints, the global batch
    a multiple of micro batch x ``divisible_by_ranks`` (``why``: the reason for that rank count, in parentheses)."""
    name = type(datamodule).__qualname__
    missing = [attribute for attribute in ("micro_batch_size", "global_batch_size")
               if not isinstance(getattr(datamodule, attribute, None), int) or getattr(datamodule, attribute) < 1]
    if missing:
        return [(f"{name} has no positive int {' or '.join(missing)}: set micro_batch_size (samples per micro-batch "
                "and rank) and global_batch_size (samples per optimizer step over all ranks) in its __init__")]
    micro, global_ = datamodule.micro_batch_size, datamodule.global_batch_size
    if global_ % (micro * divisible_by_ranks):
        per_step = (f"micro_batch_size {micro} x {divisible_by_ranks} data-parallel ranks = "
                    f"{micro * divisible_by_ranks}" if divisible_by_ranks > 1 else f"micro_batch_size {micro}")
        reason = f" ({why})" if why else ""
        return [(f"{name}: global_batch_size {global_} is not a multiple of {per_step}{reason}: choose sizes that "
                "divide")]
    return []


def resumable_datamodule_problems(datamodule: Any, data_parallel_ranks: int = 1) -> list[str]:
    """A :class:`ResumableDataModule` needs its batch sizes, splitting over ``data_parallel_ranks``, before it can
    build a loader."""
    if not isinstance(datamodule, ResumableDataModule):
        return []
    return batch_size_problems(datamodule, divisible_by_ranks=data_parallel_ranks)


def described(value: Any, expected: type | None = None) -> str:
    """``value`` in a few words for a set-up message ("a DataLoader", "a torch.nn.Module (Net)", "None")."""
    if isinstance(value, DataLoader):
        return "a DataLoader"
    if isinstance(value, torch.nn.Module) and not (expected is not None and isinstance(value, expected)):
        return f"a torch.nn.Module ({type(value).__qualname__})"
    if value is None:
        return "None"
    name = type(value).__qualname__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"
