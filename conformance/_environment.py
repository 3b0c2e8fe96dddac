"""Environment variables that do not outlive a block."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

__all__ = ["environment_restored"]


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
