"""Recursive tolerance comparison of nested structures that reports every difference.

Contract
--------
``compare(actual, expected)`` walks both structures in step and returns a
:class:`ComparisonResult` that lists every :class:`Difference` with the path at
which it occurs (at most ``max_differences`` are kept, all are counted), and a
:class:`LeafStat` for the floating-point leaf that came closest to (or went
furthest past) its tolerance.  ``assert_close`` raises :class:`ComparisonError`,
an ``AssertionError``, when there is any difference.

Structure
    Mappings of any type are compared by key: each key only in ``expected`` is a
    ``"missing key"``, each key only in ``actual`` an ``"extra key"``; common keys
    are then compared in ``expected``'s order.  Lists and tuples must have the
    same type (``"type"`` otherwise, and the items are still compared) and length
    (``"length"`` otherwise, and the common prefix is still compared).
    Namedtuples and dataclass instances must have the same class (``"type"``
    otherwise) and are compared field by field.  Sets and frozensets are compared
    exactly as sets.  Any other pair of objects must have the same type and
    compare equal with ``==``.  Values from different families (a tensor and a
    list, a NumPy scalar and a Python float, a str and bytes) are a ``"type"``
    difference.

Paths
    ``root['key']`` for mapping keys (the key's ``repr``), ``root[3]`` for
    sequence items and ``root.field`` for namedtuple/dataclass fields.

Numeric leaves
    Torch tensors, NumPy arrays and NumPy scalars (0-d arrays) are compared as
    CPU tensors; a tensor may be compared with an array.  Python ``bool``,
    ``int``, ``float`` and ``complex`` are 0-d tensors of dtype ``bool``,
    ``int64``, ``float64`` and ``complex128`` (ints beyond int64 are compared
    with ``==``).  Leaves of different shapes are a
    ``"shape"`` difference and their values are not compared.  Leaves of
    different dtypes are a ``"dtype"`` difference (unless ``check_dtype=False``)
    and their values are still compared after type promotion.

    Integer and boolean values must be equal.  Floating-point and complex values
    pass when ``|actual - expected| <= atol + rtol * |expected|``, evaluated
    through the element's *usage* ``|actual - expected| / (atol + rtol *
    |expected|)`` (0/0 is 0, x/0 is inf): an element mismatches when its usage
    exceeds 1.  Arithmetic runs in float64 for float64/complex128 and in float32
    otherwise (bfloat16 and float16 included); for complex values the magnitude
    of the difference is used.  The relative difference is
    ``|actual - expected| / |expected|`` with the same 0/0 and x/0 rules.

    Tolerances are chosen per leaf: the first ``path_tolerances`` glob pattern
    (only ``*`` and ``?`` are wildcards) that matches the whole path wins;
    otherwise ``atol`` and ``rtol`` where given, and for one not given the
    ``torch.testing`` default for the leaf's dtype (the larger one when the two
    sides differ; Python floats are float64).  Tolerances never relax integer or
    boolean leaves.

    NaN and infinity: with ``equal_nan=False`` a NaN is always a mismatch, with
    ``equal_nan=True`` a NaN matches a NaN at the same position.  Infinities
    match only an infinity of the same sign.  A non-finite mismatch has infinite
    usage; its absolute and relative differences are inf, or NaN when a NaN is
    involved.

Value differences of numeric leaves carry the mismatch count, the maximum
absolute and relative differences, and the values at the worst index: the
element with the largest usage (the first on ties), or the first mismatch for
integer and boolean leaves.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "ComparisonError",
    "ComparisonResult",
    "Difference",
    "LeafStat",
    "Tolerance",
    "assert_close",
    "compare",
]

# (atol, rtol) per dtype, the same defaults as torch.testing.assert_close.
_DEFAULT_TOLERANCES = {
    torch.float16: (1e-5, 1e-3),
    torch.bfloat16: (1e-5, 1.6e-2),
    torch.float32: (1e-5, 1.3e-6),
    torch.float64: (1e-7, 1e-7),
    torch.complex32: (1e-5, 1e-3),
    torch.complex64: (1e-5, 1.3e-6),
    torch.complex128: (1e-7, 1e-7),
}

_PYTHON_NUMBER_DTYPES = {
    bool: torch.bool,
    int: torch.int64,
    float: torch.float64,
    complex: torch.complex128,
}

# NumPy element types that torch.from_numpy accepts; other arrays are compared as plain objects.
_NUMPY_SCALAR_TYPES = frozenset(
    np.dtype(name).type
    for name in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
    + ("float16", "float32", "float64", "complex64", "complex128")
)

# Elements per block in the floating-point kernel: its (3, block) work buffer
# stays cache-resident, so every pass after the first read of the inputs is cheap.
_BLOCK = 1 << 17


def _validated_tolerance(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}; pass a float >= 0 such as 1e-5.")
    return float(value)


@dataclass(frozen=True)
class Tolerance:
    """An (atol, rtol) pair: a value passes when ``|actual - expected| <= atol + rtol * |expected|``."""

    atol: float
    rtol: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "atol", _validated_tolerance("atol", self.atol))
        object.__setattr__(self, "rtol", _validated_tolerance("rtol", self.rtol))

    def __str__(self) -> str:
        return f"atol={self.atol:.3g}, rtol={self.rtol:.3g}"


@dataclass(frozen=True)
class Difference:
    """One difference at ``path``; statistics are set for numeric ``"value"`` differences, values for any ``"value"``."""

    path: str
    kind: str
    detail: str
    mismatched: int | None = None
    total: int | None = None
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    worst_index: tuple[int, ...] | None = None
    actual_value: Any = None
    expected_value: Any = None
    tolerance: Tolerance | None = None

    def __str__(self) -> str:
        text = f"{self.path}: {self.kind}: {self.detail}"
        if self.mismatched is not None:
            text += (
                f" Max abs diff {self.max_abs_diff:.6g}, max rel diff {self.max_rel_diff:.6g};"
                f" worst at index {self.worst_index}: actual {self.actual_value!r}, expected {self.expected_value!r}."
            )
        if self.tolerance is not None:
            text += f" Tolerance {self.tolerance}."
        return text


@dataclass(frozen=True)
class LeafStat:
    """Statistics of one floating-point leaf; ``usage`` <= 1 means every element is within ``tolerance``."""

    path: str
    max_abs_diff: float
    max_rel_diff: float
    tolerance: Tolerance
    usage: float

    def __str__(self) -> str:
        return (
            f"{self.path} used {self.usage:.3g} of its tolerance ({self.tolerance}; "
            f"max abs diff {self.max_abs_diff:.6g}, max rel diff {self.max_rel_diff:.6g})"
        )


@dataclass(frozen=True)
class ComparisonResult:
    """The outcome of :func:`compare`: kept differences in traversal order, their total, and leaf-pair statistics.

    ``leaves_compared`` counts the leaf pairs whose values were compared (not those stopped by a type or shape
    difference); ``worst`` is the floating-point leaf with the largest usage, the first one on ties.
    """

    differences: tuple[Difference, ...]
    total_differences: int
    leaves_compared: int
    worst: LeafStat | None

    @property
    def ok(self) -> bool:
        """Whether no difference was found."""
        return self.total_differences == 0

    def __bool__(self) -> bool:
        """Truth means :attr:`ok`, so ``assert compare(a, b)`` fails when ``a`` and ``b`` differ."""
        return self.ok

    def format(self, limit: int | None = None) -> str:
        """Render a multi-line report listing at most ``limit`` differences, then how many were left out."""
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be None or >= 0, got {limit!r}; pass None to list every kept difference.")
        shown = self.differences if limit is None else self.differences[:limit]
        count = self.total_differences
        if self.ok:
            lines = [f"No differences in {self.leaves_compared} compared leaves."]
        else:
            plural = "" if count == 1 else "s"
            lines = [f"{count} difference{plural} in {self.leaves_compared} compared leaves."]
        if self.worst is not None and (self.ok or self.worst.usage > 1):
            lines.append(f"Worst leaf: {self.worst}")
        elif self.worst is not None:  # the differences are in exactly compared (integer, bool, other) leaves
            lines.append(f"Every floating-point leaf is within its tolerance (closest: {self.worst})")
        lines.extend(f"  {difference}" for difference in shown)
        if count > len(shown):
            lines.append(f"... and {count - len(shown)} more difference{'' if count - len(shown) == 1 else 's'}")
        return "\n".join(lines)


class ComparisonError(AssertionError):
    """Raised by :func:`assert_close` when the structures differ; ``result`` holds the full comparison."""

    def __init__(self, result: ComparisonResult) -> None:
        super().__init__(result.format())
        self.result = result

    def __reduce__(self) -> tuple[type, tuple[ComparisonResult]]:
        return type(self), (self.result,)


# ----------------------------------------------------------------------------
# Small helpers


def _type_name(value: object) -> str:
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _short_repr(value: object, limit: int = 80) -> str:
    text = repr(value).replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _nan_max(first: float, second: float) -> float:
    """The larger of two floats, NaN if either is NaN."""
    return first if math.isnan(first) or first >= second else second


def _unravel(flat_index: int, shape: torch.Size) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        flat_index, position = divmod(flat_index, size)
        index.append(position)
    return tuple(reversed(index))


def _glob_to_regex(pattern: str) -> re.Pattern[str]:
    translated = {"*": ".*", "?": "."}
    return re.compile("".join(translated.get(char) or re.escape(char) for char in pattern), re.DOTALL)


def _is_record(value: object) -> bool:
    if isinstance(value, tuple):
        return hasattr(type(value), "_fields")
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _record_fields(value: Any) -> tuple[str, ...]:
    if isinstance(value, tuple):
        return tuple(value._fields)
    return tuple(field.name for field in dataclasses.fields(value))


def _family(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return "array"
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype.type in _NUMPY_SCALAR_TYPES:
        return "array"
    if type(value) in _PYTHON_NUMBER_DTYPES:
        return "number"
    if isinstance(value, Mapping):
        return "mapping"
    if _is_record(value):
        return "record"
    if isinstance(value, (list, tuple)):
        return "sequence"
    if isinstance(value, (set, frozenset)):
        return "set"
    return "other"


def _as_tensor(value: Any) -> torch.Tensor:
    """A CPU, strided view of a tensor, NumPy array or NumPy scalar (no copy where possible)."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
    else:
        array = np.asarray(value)
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        with warnings.catch_warnings():
            # Read-only arrays are fine: the comparison never writes to its inputs.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensor = torch.from_numpy(array)
    if tensor.layout != torch.strided:
        tensor = tensor.to_dense()
    return tensor if tensor.device.type == "cpu" else tensor.cpu()


def _promote(first: torch.dtype, second: torch.dtype) -> torch.dtype:
    try:
        return torch.promote_types(first, second)
    except RuntimeError:  # e.g. uint64 with int64, which torch does not promote
        return torch.float64


def _is_inexact(dtype: torch.dtype) -> bool:
    return dtype.is_floating_point or dtype.is_complex


def _identical(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    """Whether both tensors have the same dtype and values (one fast pass); False where torch.equal is unsupported."""
    try:
        return actual.dtype == expected.dtype and torch.equal(actual, expected)
    except NotImplementedError:  # e.g. complex32 on CPU: the element-wise comparison handles it
        return False


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype in (torch.float64, torch.complex128):
        return dtype
    return torch.complex64 if dtype.is_complex else torch.float32


def _objects_equal(actual: object, expected: object) -> bool:
    if isinstance(actual, np.ndarray):
        return bool(np.array_equal(actual, expected))
    return bool(actual == expected)


# ----------------------------------------------------------------------------
# Floating-point kernel


@dataclass
class _Stats:
    """Running statistics of one floating-point leaf; ``worst_flat`` is valid only when ``mismatched`` > 0."""

    usage: float = 0.0
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0
    mismatched: int = 0
    worst_flat: int = 0

    def merge(self, block: _Stats, offset: int) -> None:
        if block.usage > self.usage:
            self.usage = block.usage
            self.worst_flat = offset + block.worst_flat
        self.max_abs_diff = _nan_max(self.max_abs_diff, block.max_abs_diff)
        self.max_rel_diff = _nan_max(self.max_rel_diff, block.max_rel_diff)
        self.mismatched += block.mismatched


def _fix_nonfinite(actual: torch.Tensor, expected: torch.Tensor, equal_nan: bool, work: torch.Tensor) -> None:
    """Apply the NaN/infinity rules to the rows (abs diff, rel diff, usage) of a block that has non-finite values."""
    diff, relative, usage = work.unbind()
    matched = actual == expected
    if equal_nan:
        matched |= actual.isnan() & expected.isnan()
    mismatched = ~(matched | (actual.isfinite() & expected.isfinite()))
    diff.masked_fill_(matched, 0.0)
    relative[mismatched] = diff[mismatched]  # inf, or NaN when a NaN is involved
    usage.masked_fill_(mismatched, math.inf)


def _block_stats(
    actual: torch.Tensor, expected: torch.Tensor, tolerance: Tolerance, equal_nan: bool, work: torch.Tensor
) -> _Stats:
    """Statistics of one 1-D block in its compute dtype; ``work`` is a (3, block) buffer of the real dtype."""
    if work.shape[1] != actual.numel():
        work = work[:, : actual.numel()]
    diff, relative, usage = work.unbind()
    if actual.is_complex():
        torch.abs(actual - expected, out=diff)
    else:
        torch.sub(actual, expected, out=diff).abs_()
    torch.abs(expected, out=relative)
    torch.mul(relative, tolerance.rtol, out=usage).add_(tolerance.atol)
    # Divide |a - e| by |e| and by the allowed error in one call; 0/0 becomes 0, x/0 stays inf.
    ratios = work[1:]
    torch.div(work[:1], ratios, out=ratios).nan_to_num_(nan=0.0, posinf=math.inf)
    max_abs_diff, max_rel_diff, max_usage = work.amax(dim=1).tolist()
    if not math.isfinite(max_abs_diff):
        _fix_nonfinite(actual, expected, equal_nan, work)
        max_abs_diff, max_rel_diff, max_usage = work.amax(dim=1).tolist()
    if max_usage <= 1:
        return _Stats(max_usage, max_abs_diff, max_rel_diff)
    return _Stats(max_usage, max_abs_diff, max_rel_diff, int(usage.gt(1).sum()), int(usage.argmax()))


def _block(flat: torch.Tensor, start: int, dtype: torch.dtype) -> torch.Tensor:
    """The block of ``flat`` starting at ``start``, converted to ``dtype`` (no-ops skipped: small leaves are common)."""
    block = flat if flat.numel() <= _BLOCK else flat[start : start + _BLOCK]
    return block if block.dtype == dtype else block.to(dtype)


def _inexact_stats(actual: torch.Tensor, expected: torch.Tensor, tolerance: Tolerance, equal_nan: bool) -> _Stats:
    """Statistics of two same-shape tensors compared block by block in their promoted compute dtype."""
    compute = _compute_dtype(_promote(actual.dtype, expected.dtype))
    actual, expected = actual.reshape(-1), expected.reshape(-1)
    count = actual.numel()
    work = torch.empty((3, min(count, _BLOCK)), dtype=compute.to_real())
    stats = _Stats()
    for start in range(0, count, _BLOCK):
        block_actual, block_expected = _block(actual, start, compute), _block(expected, start, compute)
        stats.merge(_block_stats(block_actual, block_expected, tolerance, equal_nan, work), start)
    return stats


def _exact_stats(actual: torch.Tensor, expected: torch.Tensor) -> _Stats:
    """Statistics of two unequal integer or boolean tensors; the worst element is the first mismatch."""
    mismatches = actual.ne(expected).reshape(-1)
    diff = (actual.double() - expected.double()).abs_()
    relative = diff.div(expected.double().abs()).nan_to_num_(nan=0.0, posinf=math.inf)
    first = int(mismatches.to(torch.uint8).argmax())
    # Exact leaves allow no error, so any mismatch uses an infinite share of the tolerance.
    return _Stats(math.inf, diff.max().item(), relative.max().item(), int(mismatches.sum()), first)


# ----------------------------------------------------------------------------
# Traversal


class _Comparator:
    """Walks two structures iteratively and accumulates differences and leaf statistics."""

    def __init__(
        self,
        atol: float | None,
        rtol: float | None,
        equal_nan: bool,
        path_tolerances: tuple[tuple[re.Pattern[str], Tolerance], ...],
        check_dtype: bool,
        max_differences: int,
    ) -> None:
        self.atol = atol
        self.rtol = rtol
        self.equal_nan = equal_nan
        self.path_tolerances = path_tolerances
        self.check_dtype = check_dtype
        self.max_differences = max_differences
        self.differences: list[Difference] = []
        self.total_differences = 0
        self.leaves_compared = 0
        self.worst: LeafStat | None = None
        self.dtype_tolerances: dict[tuple[torch.dtype, ...], Tolerance] = {}
        self.handlers: dict[str, Callable[[str, Any, Any], list[tuple[str, Any, Any]]]] = {
            "array": self._compare_arrays,
            "number": self._compare_numbers,
            "mapping": self._compare_mappings,
            "record": self._compare_records,
            "sequence": self._compare_sequences,
            "set": self._compare_sets,
            "other": self._compare_objects,
        }

    def run(self, actual: Any, expected: Any, root: str) -> ComparisonResult:
        stack = [(root, actual, expected)]
        while stack:
            path, actual_item, expected_item = stack.pop()
            family = _family(actual_item)
            if family != _family(expected_item):
                self._type_difference(path, actual_item, expected_item)
                continue
            children = self.handlers[family](path, actual_item, expected_item)
            stack.extend(reversed(children))
        return ComparisonResult(tuple(self.differences), self.total_differences, self.leaves_compared, self.worst)

    def _report(self, difference: Difference) -> None:
        self.total_differences += 1
        if len(self.differences) < self.max_differences:
            self.differences.append(difference)

    def _type_difference(self, path: str, actual: object, expected: object) -> None:
        detail = f"Actual is {_type_name(actual)} but expected is {_type_name(expected)}."
        self._report(Difference(path, "type", detail))

    # Containers: each returns the child pairs to visit, in order.

    def _compare_mappings(self, path: str, actual: Mapping, expected: Mapping) -> list[tuple[str, Any, Any]]:
        for key in expected:
            if key not in actual:
                self._report(Difference(f"{path}[{key!r}]", "missing key", f"Key {key!r} is missing from actual."))
        for key in actual:
            if key not in expected:
                self._report(Difference(f"{path}[{key!r}]", "extra key", f"Key {key!r} is not in expected."))
        return [(f"{path}[{key!r}]", actual[key], expected[key]) for key in expected if key in actual]

    def _compare_records(self, path: str, actual: Any, expected: Any) -> list[tuple[str, Any, Any]]:
        if type(actual) is not type(expected):
            self._type_difference(path, actual, expected)
            return []
        return [(f"{path}.{name}", getattr(actual, name), getattr(expected, name)) for name in _record_fields(expected)]

    def _compare_sequences(self, path: str, actual: Any, expected: Any) -> list[tuple[str, Any, Any]]:
        if type(actual) is not type(expected):
            self._type_difference(path, actual, expected)
        if len(actual) != len(expected):
            detail = (
                f"Actual has length {len(actual)} but expected has length {len(expected)};"
                f" the first {min(len(actual), len(expected))} items were compared."
            )
            self._report(Difference(path, "length", detail))
        return [(f"{path}[{index}]", *pair) for index, pair in enumerate(zip(actual, expected))]

    # Leaves: each returns no children.

    def _compare_sets(self, path: str, actual: Any, expected: Any) -> list[tuple[str, Any, Any]]:
        if type(actual) is not type(expected):
            self._type_difference(path, actual, expected)
        self.leaves_compared += 1
        if actual != expected:
            only_actual = ", ".join(sorted(map(repr, actual - expected)))
            only_expected = ", ".join(sorted(map(repr, expected - actual)))
            detail = f"Sets differ: only in actual {{{only_actual}}}, only in expected {{{only_expected}}}."
            self._report(Difference(path, "value", detail, actual_value=actual, expected_value=expected))
        return []

    def _compare_objects(self, path: str, actual: Any, expected: Any) -> list[tuple[str, Any, Any]]:
        if type(actual) is not type(expected):
            self._type_difference(path, actual, expected)
            return []
        self.leaves_compared += 1
        try:
            equal = _objects_equal(actual, expected)
        except (TypeError, ValueError, RuntimeError) as error:  # e.g. an ambiguous array truth value
            detail = f"Could not compare with ==: {type(error).__name__}: {error}."
            self._report(Difference(path, "value", detail, actual_value=actual, expected_value=expected))
            return []
        if not equal:
            detail = f"Actual {_short_repr(actual)} != expected {_short_repr(expected)}."
            self._report(Difference(path, "value", detail, actual_value=actual, expected_value=expected))
        return []

    def _compare_numbers(self, path: str, actual: Any, expected: Any) -> list[tuple[str, Any, Any]]:
        kind = type(actual)
        if kind is type(expected) and kind is not complex and actual == expected:
            # Equal Python numbers of one type (so no NaN): what the tensor route below concludes, without tensors.
            self.leaves_compared += 1
            if kind is float and self.worst is None:
                tolerance = self._tolerance_for(path, torch.float64, torch.float64)
                self.worst = LeafStat(path, 0.0, 0.0, tolerance, 0.0)
            return []
        try:
            actual_tensor = torch.tensor(actual, dtype=_PYTHON_NUMBER_DTYPES[type(actual)])
            expected_tensor = torch.tensor(expected, dtype=_PYTHON_NUMBER_DTYPES[type(expected)])
        except (OverflowError, RuntimeError, ValueError):  # an int outside the int64 range
            return self._compare_objects(path, actual, expected)
        if self.check_dtype and type(actual) is not type(expected):
            detail = (
                f"Actual is a Python {type(actual).__name__} but expected is a Python {type(expected).__name__};"
                f" values were compared as {_promote(actual_tensor.dtype, expected_tensor.dtype)}."
            )
            self._report(Difference(path, "dtype", detail))
        self._compare_values(path, actual_tensor, expected_tensor)
        return []

    def _compare_arrays(self, path: str, actual: Any, expected: Any) -> list[tuple[str, Any, Any]]:
        actual_tensor, expected_tensor = _as_tensor(actual), _as_tensor(expected)
        if actual_tensor.shape != expected_tensor.shape:
            detail = (
                f"Actual has shape {tuple(actual_tensor.shape)} but expected has shape"
                f" {tuple(expected_tensor.shape)}; values were not compared."
            )
            self._report(Difference(path, "shape", detail))
            return []
        if self.check_dtype and actual_tensor.dtype != expected_tensor.dtype:
            detail = (
                f"Actual has dtype {actual_tensor.dtype} but expected has dtype {expected_tensor.dtype};"
                f" values were compared as {_promote(actual_tensor.dtype, expected_tensor.dtype)}."
            )
            self._report(Difference(path, "dtype", detail))
        self._compare_values(path, actual_tensor, expected_tensor)
        return []

    # Values of two same-shape CPU tensors.

    def _compare_values(self, path: str, actual: torch.Tensor, expected: torch.Tensor) -> None:
        self.leaves_compared += 1
        if _is_inexact(actual.dtype) or _is_inexact(expected.dtype):
            self._compare_inexact(path, actual, expected)
        else:
            promoted = _promote(actual.dtype, expected.dtype)
            self._compare_exact(path, actual.to(promoted), expected.to(promoted))

    def _compare_exact(self, path: str, actual: torch.Tensor, expected: torch.Tensor) -> None:
        if not _identical(actual, expected):
            self._value_difference(path, actual, expected, _exact_stats(actual, expected), None)

    def _compare_inexact(self, path: str, actual: torch.Tensor, expected: torch.Tensor) -> None:
        tolerance = self._tolerance_for(path, actual.dtype, expected.dtype)
        if _identical(actual, expected):
            stats = _Stats()
        else:
            stats = _inexact_stats(actual, expected, tolerance, self.equal_nan)
        if stats.mismatched:
            self._value_difference(path, actual, expected, stats, tolerance)
        if self.worst is None or stats.usage > self.worst.usage:
            self.worst = LeafStat(path, stats.max_abs_diff, stats.max_rel_diff, tolerance, stats.usage)

    def _value_difference(
        self, path: str, actual: torch.Tensor, expected: torch.Tensor, stats: _Stats, tolerance: Tolerance | None
    ) -> None:
        index = _unravel(stats.worst_flat, actual.shape)
        verb = "differ" if tolerance is None else "are outside the tolerance"
        self._report(
            Difference(
                path,
                "value",
                f"{stats.mismatched} of {actual.numel()} elements {verb}.",
                mismatched=stats.mismatched,
                total=actual.numel(),
                max_abs_diff=stats.max_abs_diff,
                max_rel_diff=stats.max_rel_diff,
                worst_index=index,
                actual_value=actual[index].item(),
                expected_value=expected[index].item(),
                tolerance=tolerance,
            )
        )

    def _tolerance_for(self, path: str, *dtypes: torch.dtype) -> Tolerance:
        for pattern, tolerance in self.path_tolerances:
            if pattern.fullmatch(path):
                return tolerance
        if dtypes not in self.dtype_tolerances:
            defaults = [_DEFAULT_TOLERANCES.get(dtype, (0.0, 0.0)) for dtype in dtypes]
            atol = self.atol if self.atol is not None else max(default[0] for default in defaults)
            rtol = self.rtol if self.rtol is not None else max(default[1] for default in defaults)
            self.dtype_tolerances[dtypes] = Tolerance(atol, rtol)
        return self.dtype_tolerances[dtypes]


# ----------------------------------------------------------------------------
# Public entry points


def _as_tolerance(pattern: str, value: object) -> Tolerance:
    if isinstance(value, Tolerance):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        try:
            return Tolerance(*value)
        except ValueError as error:
            raise ValueError(f"path_tolerances[{pattern!r}]: {error}") from None
    raise ValueError(
        f"path_tolerances[{pattern!r}] must be a Tolerance or an (atol, rtol) pair, got {value!r};"
        " pass e.g. Tolerance(atol=1e-5, rtol=1e-4)."
    )


def _validated_path_tolerances(
    path_tolerances: Mapping[str, Tolerance | tuple[float, float]] | None,
) -> tuple[tuple[re.Pattern[str], Tolerance], ...]:
    if path_tolerances is None:
        return ()
    if isinstance(path_tolerances, Mapping) and all(isinstance(pattern, str) for pattern in path_tolerances):
        return tuple(
            (_glob_to_regex(pattern), _as_tolerance(pattern, value)) for pattern, value in path_tolerances.items()
        )
    raise ValueError(
        f"path_tolerances must map glob pattern strings to Tolerance or (atol, rtol) pairs, got {path_tolerances!r};"
        " pass e.g. {\"root['state'][*]['exp_avg']\": (1e-5, 1e-4)}."
    )


def compare(
    actual: Any,
    expected: Any,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    equal_nan: bool = False,
    path_tolerances: Mapping[str, Tolerance | tuple[float, float]] | None = None,
    check_dtype: bool = True,
    max_differences: int = 50,
    root: str = "root",
) -> ComparisonResult:
    """Compare two nested structures under the rules of this module and return every difference found."""
    if isinstance(max_differences, bool) or not isinstance(max_differences, int) or max_differences < 1:
        raise ValueError(f"max_differences must be an int >= 1, got {max_differences!r}; pass e.g. 50.")
    if not isinstance(root, str):
        raise TypeError(f"root must be a string naming the top-level path, got {root!r}; pass e.g. 'root'.")
    comparator = _Comparator(
        atol=None if atol is None else _validated_tolerance("atol", atol),
        rtol=None if rtol is None else _validated_tolerance("rtol", rtol),
        equal_nan=bool(equal_nan),
        path_tolerances=_validated_path_tolerances(path_tolerances),
        check_dtype=bool(check_dtype),
        max_differences=max_differences,
    )
    return comparator.run(actual, expected, root)


def assert_close(
    actual: Any,
    expected: Any,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    equal_nan: bool = False,
    path_tolerances: Mapping[str, Tolerance | tuple[float, float]] | None = None,
    check_dtype: bool = True,
    max_differences: int = 50,
    root: str = "root",
) -> None:
    """Raise :class:`ComparisonError` listing every difference unless ``compare`` with the same arguments finds none."""
    result = compare(
        actual,
        expected,
        atol=atol,
        rtol=rtol,
        equal_nan=equal_nan,
        path_tolerances=path_tolerances,
        check_dtype=check_dtype,
        max_differences=max_differences,
        root=root,
    )
    if not result.ok:
        raise ComparisonError(result)
