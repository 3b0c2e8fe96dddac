"""How failure messages show lists and nested text: the same way in every suite and in the reader."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["indent", "listing"]


def listing(items: Sequence[Any], limit: int = 12, *, show: Callable[[Any], str] = str, separator: str = ", ") -> str:
    """At most ``limit`` items and how many there are in all: ``[3, 4, 9, ...] (40 in all)``."""
    shown = separator.join(show(item) for item in items[:limit])
    more = f"{separator}..." if len(items) > limit else ""
    return f"[{shown}{more}] ({len(items)} in all)"


def indent(text: str, spaces: int = 2) -> str:
    """Every line of ``text`` indented by ``spaces``."""
    return "\n".join(" " * spaces + line for line in text.splitlines())
