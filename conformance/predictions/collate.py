"""Predictions as flat ``{key: tensor}`` batches, and their collation: concatenate along a per-key batch dim,
pad along a per-key sequence dim.

A prediction may be a dict of tensors (``None`` values carry nothing and are left out), a bare tensor (stored
under :data:`TENSOR_KEY`) or ``None`` (nothing to store). :func:`collate` works in memory; :func:`collation_plan`
describes the same result as byte segments of the parts, so a writer can stream it without holding the parts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

__all__ = ["RESERVED_KEYS", "TENSOR_KEY", "CollationDims", "Pad", "Segment", "collate", "collation_plan",
           "flatten_prediction", "num_rows", "output_shape", "take_rows", "unflatten_prediction"]

#: A bare-tensor prediction is stored under this key.
TENSOR_KEY = "prediction"
#: Keys the writers add to every stored prediction; a prediction may not use them itself.
RESERVED_KEYS = ("batch_idx", "sample_ids")


@dataclass(frozen=True)
class CollationDims:
    """Which dim of each key's tensor is the batch dim and which the sequence dim (padded when lengths differ).

    Keys not listed use batch dim 0 and sequence dim 1; a tensor with too few dims for its sequence dim has none.
    The defaults know NeMo's sequence-first ``token_logits`` (``[seq, batch, vocab]``).
    """

    batch_dim_key_defaults: Mapping[str, int] = field(default_factory=lambda: {"token_logits": 1})
    seq_dim_key_defaults: Mapping[str, int] = field(default_factory=lambda: {"token_logits": 0})

    def batch_dim(self, key: str) -> int:
        return self.batch_dim_key_defaults.get(key, 0)

    def seq_dim(self, key: str, ndim: int) -> int | None:
        """The sequence dim of ``key`` for a tensor of ``ndim`` dims, or None when it has none."""
        dim = self.seq_dim_key_defaults.get(key, 1)
        return dim if dim < ndim and dim != self.batch_dim(key) else None


def flatten_prediction(prediction: Any, where: str) -> tuple[str, dict[str, torch.Tensor]] | None:
    """``("dict" | "tensor", {key: tensor})`` for a prediction, or None for a ``None`` prediction."""
    if prediction is None:
        return None
    if isinstance(prediction, torch.Tensor):
        return "tensor", {TENSOR_KEY: prediction.detach().cpu()}
    if isinstance(prediction, Mapping):
        tensors = {}
        for key, value in prediction.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: prediction keys must be strings, got {key!r}")
            if key in RESERVED_KEYS:
                raise ValueError(f"{where}: prediction key {key!r} is reserved for the writer's bookkeeping; "
                                 f"rename it in predict_step (reserved: {', '.join(RESERVED_KEYS)})")
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().cpu()
            elif value is not None:
                raise TypeError(f"{where}: prediction[{key!r}] is a {type(value).__qualname__}; the writers store "
                                "tensors (None values are left out): convert it to a tensor in predict_step")
        return "dict", tensors
    raise TypeError(f"{where}: a prediction must be a dict of tensors, a tensor or None, got a "
                    f"{type(prediction).__qualname__}")


def unflatten_prediction(kind: str, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`flatten_prediction` (without the reserved keys)."""
    values = {key: value for key, value in tensors.items() if key not in RESERVED_KEYS}
    return values[TENSOR_KEY] if kind == "tensor" else values


def num_rows(tensors: Mapping[str, torch.Tensor], dims: CollationDims, where: str) -> int:
    """The number of samples in a flat batch; every key must agree."""
    sizes = {key: _batch_size(key, tensor, dims) for key, tensor in tensors.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"{where}: keys disagree on the batch size ({sizes}); set batch_dim_key_defaults for "
                         "keys whose batch dim is not 0")
    return next(iter(sizes.values()), 0)


def _batch_size(key: str, tensor: torch.Tensor, dims: CollationDims) -> int:
    dim = dims.batch_dim(key)
    if tensor.dim() <= dim:
        raise ValueError(f"prediction[{key!r}] has shape {tuple(tensor.shape)}, with no batch dim {dim}; set "
                         "batch_dim_key_defaults for it")
    return tensor.shape[dim]


def take_rows(tensors: Mapping[str, torch.Tensor], dims: CollationDims, rows: torch.Tensor) -> dict[str, Any]:
    """The samples at positions ``rows`` of every key, along each key's batch dim."""
    return {key: tensor.index_select(dims.batch_dim(key), rows) for key, tensor in tensors.items()}


def collate(batches: Sequence[Mapping[str, torch.Tensor]], dims: CollationDims,
            pad_value: float = 0.0) -> dict[str, torch.Tensor]:
    """Concatenate flat batches key by key along the batch dim, padding shorter sequences with ``pad_value``."""
    if not batches:
        return {}
    keys = list(batches[0])
    for index, batch in enumerate(batches):
        if list(batch) != keys:
            raise ValueError(f"batch {index} has keys {sorted(batch)}, batch 0 has {sorted(keys)}: every "
                             "prediction must have the same keys")
    collated = {}
    for key in keys:
        parts = [batch[key] for batch in batches]
        shape = output_shape(key, [tuple(part.shape) for part in parts], dims)
        seq_dim = dims.seq_dim(key, len(shape))
        if seq_dim is not None:
            parts = [_pad_to(part, seq_dim, shape[seq_dim], pad_value) for part in parts]
        collated[key] = torch.cat(parts, dim=dims.batch_dim(key))
    return collated


def _pad_to(tensor: torch.Tensor, dim: int, length: int, value: float) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if not missing:
        return tensor
    widths = [0, 0] * (tensor.dim() - dim - 1) + [0, missing]
    return F.pad(tensor, widths, value=value)


def output_shape(key: str, shapes: Sequence[tuple[int, ...]], dims: CollationDims) -> tuple[int, ...]:
    """The collated shape of ``key`` from its parts' shapes; raises when they cannot be collated."""
    ndims = {len(shape) for shape in shapes}
    if len(ndims) > 1:
        raise ValueError(f"prediction[{key!r}] changes its number of dims between batches: {sorted(ndims)}")
    ndim = ndims.pop()
    batch_dim, seq_dim = dims.batch_dim(key), dims.seq_dim(key, ndim)
    shape = []
    for dim in range(ndim):
        sizes = {part[dim] for part in shapes}
        if dim == batch_dim:
            shape.append(sum(part[dim] for part in shapes))
        elif dim == seq_dim:
            shape.append(max(sizes))
        elif len(sizes) > 1:
            raise ValueError(f"prediction[{key!r}] has sizes {sorted(sizes)} in dim {dim} across batches; only the "
                             f"batch dim ({batch_dim}) and the sequence dim ({seq_dim}) may vary: set "
                             "seq_dim_key_defaults for this key")
        else:
            shape.append(sizes.pop())
    return tuple(shape)


# --- streaming collation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """``length`` bytes of part ``part`` starting at byte ``offset`` of that part's C-order data."""

    part: int
    offset: int
    length: int


@dataclass(frozen=True)
class Pad:
    """``length`` bytes of padding."""

    length: int


def collation_plan(key: str, shapes: Sequence[tuple[int, ...]], dims: CollationDims,
                   itemsize: int) -> tuple[tuple[int, ...], list[Segment | Pad]]:
    """The collated shape of ``key`` and the byte segments (of parts, or padding) that form it in C order.

    Adjacent segments are merged, so a batch-dim-0 key without padding is one segment per part.
    """
    shape = output_shape(key, shapes, dims)
    batch_dim, seq_dim = dims.batch_dim(key), dims.seq_dim(key, len(shape))
    if seq_dim is None or seq_dim > batch_dim:
        pieces = _seq_after_batch(shape, shapes, batch_dim, seq_dim, itemsize)
    else:
        pieces = _seq_before_batch(shape, shapes, batch_dim, seq_dim, itemsize)
    return shape, _merged(pieces)


def _byte_strides(shape: Sequence[int], itemsize: int) -> list[int]:
    strides, running = [], itemsize
    for size in reversed(shape):
        strides.append(running)
        running *= size
    return strides[::-1]


def _prefixes(shape: Sequence[int], stop: int, start: int = 0) -> Iterator[tuple[int, ...]]:
    """Every index tuple over dims ``start..stop-1`` of ``shape``, in C order."""
    ranges = [range(shape[dim]) for dim in range(start, stop)]
    if not ranges:
        yield ()
        return
    yield from _product(ranges)


def _product(ranges: list[range]) -> Iterator[tuple[int, ...]]:
    if len(ranges) == 1:
        yield from ((index,) for index in ranges[0])
        return
    for head in ranges[0]:
        for tail in _product(ranges[1:]):
            yield (head, *tail)


def _seq_after_batch(shape: tuple[int, ...], parts: Sequence[tuple[int, ...]], batch_dim: int, seq_dim: int | None,
                     itemsize: int) -> Iterator[Segment | Pad]:
    """Outer dims, then part after part; within a part, rows up to the sequence dim, each padded to length."""
    after_seq = math.prod(shape[seq_dim + 1:]) * itemsize if seq_dim is not None else 0
    for outer in _prefixes(shape, batch_dim):
        for index, part in enumerate(parts):
            strides = _byte_strides(part, itemsize)
            base = sum(position * stride for position, stride in zip(outer, strides))
            if seq_dim is None:
                yield Segment(index, base, math.prod(part[batch_dim:]) * itemsize)
                continue
            for row in _prefixes(part, seq_dim, batch_dim):
                offset = base + sum(position * strides[batch_dim + n] for n, position in enumerate(row))
                yield Segment(index, offset, part[seq_dim] * after_seq)
                yield Pad((shape[seq_dim] - part[seq_dim]) * after_seq)


def _seq_before_batch(shape: tuple[int, ...], parts: Sequence[tuple[int, ...]], batch_dim: int, seq_dim: int,
                      itemsize: int) -> Iterator[Segment | Pad]:
    """Dims up to the batch dim (the sequence dim among them), then each part's block of the batch dim onwards."""
    after_batch = math.prod(shape[batch_dim + 1:]) * itemsize
    for outer in _prefixes(shape, batch_dim):
        for index, part in enumerate(parts):
            block = part[batch_dim] * after_batch
            if outer[seq_dim] >= part[seq_dim]:
                yield Pad(block)
                continue
            strides = _byte_strides(part, itemsize)
            yield Segment(index, sum(position * stride for position, stride in zip(outer, strides)), block)


def _merged(pieces: Iterator[Segment | Pad]) -> list[Segment | Pad]:
    merged: list[Segment | Pad] = []
    for piece in pieces:
        if not piece.length:
            continue
        last = merged[-1] if merged else None
        if isinstance(piece, Pad) and isinstance(last, Pad):
            merged[-1] = Pad(last.length + piece.length)
        elif (isinstance(piece, Segment) and isinstance(last, Segment) and last.part == piece.part
              and last.offset + last.length == piece.offset):
            merged[-1] = Segment(last.part, last.offset, last.length + piece.length)
        else:
            merged.append(piece)
    return merged
