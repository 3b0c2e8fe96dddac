"""Wrapping one method of one object (never its class) while a run lasts, and putting it back."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

__all__ = ["unwrap_method", "wrap_method"]


def wrap_method(target: Any, name: str, around: Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]
                ) -> None:
    """Make ``target.name(*args, **kwargs)`` call ``around(original, args, kwargs)`` until :func:`unwrap_method`."""
    original = getattr(target, name)

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return around(original, args, kwargs)

    setattr(target, _marker(name), original)
    setattr(target, name, wrapped)


def unwrap_method(target: Any, name: str) -> None:
    """Undo :func:`wrap_method` (nothing happens if ``target.name`` is not wrapped)."""
    if _marker(name) in vars(target):
        delattr(target, name)
        delattr(target, _marker(name))


def _marker(name: str) -> str:
    return f"_conformance_original_{name}"
