"""Exact digests of training state and, where two differ, what differs in words.

A digest is sha256 over a canonical walk of a nested state (mappings by sorted key, sequences in order; a tensor as
its dtype, shape and raw bytes; any other leaf as its type and ``repr``): two states have the same digest exactly
when every leaf is bit-identical, whatever tolerance a later comparison allows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["Path", "describe_path", "leaf_difference", "leaves", "state_digest"]

#: Where a leaf sits in a nested state: the keys and indices leading to it.
Path = tuple[Any, ...]


def leaves(value: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every leaf of ``value`` with its path, in the canonical order (mapping keys sorted by type name and repr)."""
    if isinstance(value, Mapping):
        for key in sorted(value, key=lambda item: (type(item).__name__, repr(item))):
            yield from leaves(value[key], (*path, key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from leaves(item, (*path, index))
    else:
        yield path, value


def state_digest(value: Any) -> str:
    """The sha256 hex digest of ``value``'s canonical walk."""
    digest = hashlib.sha256()
    for path, leaf in leaves(value):
        digest.update(repr(path).encode())
        digest.update(_leaf_bytes(leaf))
    return digest.hexdigest()


def leaf_difference(saved: Any, restored: Any) -> str | None:
    """How ``restored`` differs from ``saved`` (one leaf each), in words; None when they are bit-identical."""
    if _leaf_bytes(saved) == _leaf_bytes(restored):
        return None
    if isinstance(saved, torch.Tensor) and isinstance(restored, torch.Tensor):
        if saved.dtype != restored.dtype or saved.shape != restored.shape:
            return (f"is {_dtype_shape(restored)}, the saving run had {_dtype_shape(saved)}")
        if not bool(restored.count_nonzero()) and bool(saved.count_nonzero()):
            return f"is all zeros (the saving run's max |x| = {_max_abs(saved):.3g})"
        difference = _max_abs(restored.double() - saved.double()) if saved.is_floating_point() else None
        return "differs" + ("" if difference is None else f" (max abs diff {difference:.3g})")
    return f"is {restored!r}, the saving run had {saved!r}"


def _leaf_bytes(leaf: Any) -> bytes:
    if isinstance(leaf, np.ndarray):
        leaf = torch.from_numpy(np.ascontiguousarray(leaf))
    if isinstance(leaf, torch.Tensor):
        flat = leaf.detach().cpu().contiguous().reshape(-1)
        raw = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
        return f"tensor|{leaf.dtype}|{tuple(leaf.shape)}|".encode() + raw
    return f"{type(leaf).__name__}|{leaf!r}".encode()


def _dtype_shape(tensor: torch.Tensor) -> str:
    return f"{str(tensor.dtype).removeprefix('torch.')}{list(tensor.shape)}"


def _max_abs(tensor: torch.Tensor) -> float:
    return float(tensor.abs().max()) if tensor.numel() else 0.0


def describe_path(path: Sequence[Any]) -> str:
    """A path as ``a.b[0].c``."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")
