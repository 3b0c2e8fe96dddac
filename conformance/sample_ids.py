"""Find the sample ids in a batch or a prediction: the default of the ``sample_ids`` hook of the suites."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["SAMPLE_ID_KEYS", "SampleIdError", "default_sample_ids", "ids_as_list"]

#: Keys tried, in order, in a mapping batch or prediction.
SAMPLE_ID_KEYS = ("idx", "index", "sample_id", "sample_idx", "id")


class SampleIdError(ValueError):
    """A batch or prediction carries no recognisable sample ids."""


def default_sample_ids(batch: Any) -> list[int]:
    """The integer sample ids under the first of :data:`SAMPLE_ID_KEYS` present in a mapping ``batch``."""
    if isinstance(batch, Mapping):
        for key in SAMPLE_ID_KEYS:
            if key in batch:
                return ids_as_list(batch[key], where=f"batch[{key!r}]")
        found = f"a mapping with keys {sorted(map(str, batch))}"
    else:
        found = f"a {type(batch).__qualname__}"
    raise SampleIdError(
        f"cannot find sample ids in {found}: return one of the keys {list(SAMPLE_ID_KEYS)} (the dataset index of "
        "each sample) from the dataset's __getitem__, or override the classmethod sample_ids(batch) to extract them"
    )


def ids_as_list(ids: Any, where: str = "sample ids") -> list[int]:
    """``ids`` (an integer tensor, array or sequence) as a list of Python ints."""
    if isinstance(ids, torch.Tensor):
        if ids.is_floating_point() or ids.is_complex():
            raise SampleIdError(f"{where} must be integers, got a {ids.dtype} tensor")
        return [int(value) for value in ids.reshape(-1).tolist()]
    if isinstance(ids, Sequence) and not isinstance(ids, (str, bytes)):
        if not all(isinstance(value, int) and not isinstance(value, bool) for value in ids):
            raise SampleIdError(f"{where} must be a sequence of ints, got {list(ids)[:5]!r}...")
        return list(ids)
    if hasattr(ids, "tolist"):
        return ids_as_list(list(ids.tolist()), where)
    raise SampleIdError(f"{where} must be an integer tensor, array or sequence, got a {type(ids).__qualname__}")
