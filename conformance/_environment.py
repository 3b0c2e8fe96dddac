"""Environment variables: ones that do not outlive a block, and what they tell about how this process started."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

__all__ = ["environment_restored", "launched_by"]


@contextlib.contextmanager
def environment_restored(names: Iterable[str]) -> Iterator[None]:
    """Inside the block the variables ``names`` may change; after it each is as before (set, or unset)."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def launched_by() -> str:
    """How this process was started, as its environment tells: "torchrun (node n of N)" (torchelastic's variables),
    "the kit's launcher" (a rank process of the kit) or "the test process" (no launcher)."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        return f"torchrun (node {os.environ.get('GROUP_RANK', '?')} of {os.environ.get('GROUP_WORLD_SIZE', '?')})"
    if os.environ.get("CONFORMANCE_RANK_PROCESS") == "1":
        return "the kit's launcher"
    return "the test process"
