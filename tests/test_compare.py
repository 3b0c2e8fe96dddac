"""Tests for conformance.compare, the recursive tolerance comparator."""

from __future__ import annotations

import math
import pickle
import unittest
import warnings
from collections import OrderedDict, namedtuple
from dataclasses import dataclass

import numpy as np
import torch

from conformance.compare import (
    ComparisonError,
    ComparisonResult,
    Difference,
    LeafStat,
    Tolerance,
    assert_close,
    compare,
)

Point = namedtuple("Point", ["x", "y"])
Pair = namedtuple("Pair", ["x", "y"])
NAN = math.nan
INF = math.inf


@dataclass
class Batch:
    inputs: object
    label: object


@dataclass
class OtherBatch:
    inputs: object
    label: object


class Opaque:
    """An object compared with == only."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.value == self.value

    __hash__ = None


class RaisingEq:
    def __eq__(self, other: object) -> bool:
        raise ValueError("cannot compare")

    __hash__ = None


def kinds(result: ComparisonResult) -> list[tuple[str, str]]:
    return [(difference.path, difference.kind) for difference in result.differences]


class StructureTest(unittest.TestCase):
    def test_identical_nested_structure_is_ok(self):
        value = {"a": [1, 2.5, (torch.ones(2), "s")], "b": {"c": None, "d": b"x"}}
        result = compare(value, value)
        self.assertTrue(result.ok)
        self.assertEqual(result.differences, ())
        self.assertEqual(result.total_differences, 0)
        self.assertEqual(result.leaves_compared, 6)

    def test_missing_and_extra_keys_are_reported_separately_before_children(self):
        actual = {"a": 1, "b": 2, "x": 3, "y": 4}
        expected = {"c": 0, "b": 5, "a": 1, "d": 0}
        result = compare(actual, expected)
        self.assertEqual(
            kinds(result),
            [
                ("root['c']", "missing key"),
                ("root['d']", "missing key"),
                ("root['x']", "extra key"),
                ("root['y']", "extra key"),
                ("root['b']", "value"),
            ],
        )
        self.assertIn("'c'", result.differences[0].detail)

    def test_common_keys_are_compared_in_expected_order(self):
        actual = {"a": 1, "b": 1, "c": 1}
        expected = {"c": 2, "a": 2, "b": 2}
        self.assertEqual(
            [path for path, _ in kinds(compare(actual, expected))], ["root['c']", "root['a']", "root['b']"]
        )

    def test_mapping_types_are_interchangeable(self):
        self.assertTrue(compare(OrderedDict(a=1, b=2), {"b": 2, "a": 1}).ok)

    def test_integer_keys_use_repr_in_paths(self):
        result = compare({3: 1, "3": 1}, {3: 2, "3": 2})
        self.assertEqual([path for path, _ in kinds(result)], ["root[3]", "root['3']"])

    def test_length_difference_still_compares_common_prefix(self):
        result = compare([1, 2, 9, 4], [1, 2, 3])
        self.assertEqual(kinds(result), [("root", "length"), ("root[2]", "value")])
        self.assertIn("length 4", result.differences[0].detail)
        self.assertIn("length 3", result.differences[0].detail)

    def test_list_versus_tuple_is_a_type_difference_and_items_are_still_compared(self):
        result = compare([1, 2], (1, 3))
        self.assertEqual(kinds(result), [("root", "type"), ("root[1]", "value")])
        self.assertIn("list", result.differences[0].detail)
        self.assertIn("tuple", result.differences[0].detail)

    def test_structural_type_mismatches(self):
        cases = [
            ("namedtuple classes", Point(1, 2), Pair(1, 2)),
            ("namedtuple versus tuple", Point(1, 2), (1, 2)),
            ("dataclass classes", Batch(1, 2), OtherBatch(1, 2)),
            ("dataclass versus namedtuple", Batch(1, 2), Point(1, 2)),
            ("tensor versus list", torch.ones(2), [1.0, 1.0]),
            ("mapping versus list", {"a": 1}, [1]),
            ("number versus string", 1, "1"),
            ("tensor versus float", torch.tensor(1.0), 1.0),
            ("str versus bytes", "a", b"a"),
            ("None versus zero", None, 0),
            ("set versus list", {1}, [1]),
        ]
        for name, actual, expected in cases:
            with self.subTest(name):
                result = compare(actual, expected)
                self.assertEqual(kinds(result), [("root", "type")])
                self.assertEqual(result.leaves_compared, 0)

    def test_namedtuple_fields_use_attribute_paths(self):
        result = compare(Point(1, [2.0]), Point(1, [3.0]))
        self.assertEqual(kinds(result), [("root.y[0]", "value")])

    def test_dataclass_fields_use_attribute_paths(self):
        actual = {"batch": Batch(inputs=torch.zeros(2), label="cat")}
        expected = {"batch": Batch(inputs=torch.ones(2), label="dog")}
        result = compare(actual, expected)
        self.assertEqual(kinds(result), [("root['batch'].inputs", "value"), ("root['batch'].label", "value")])

    def test_optimizer_state_paths(self):
        def state(value: float) -> dict:
            return {
                "optimizer": [
                    {
                        "state": {3: {"step": torch.tensor(5.0), "exp_avg": torch.full((2,), value)}},
                        "param_groups": [{"lr": 0.1, "params": [3]}],
                    }
                ]
            }

        result = compare(state(1.0), state(2.0))
        self.assertEqual(kinds(result), [("root['optimizer'][0]['state'][3]['exp_avg']", "value")])

    def test_custom_root_name(self):
        result = compare({"a": 1}, {"a": 2}, root="model")
        self.assertEqual(result.differences[0].path, "model['a']")

    def test_shape_mismatch_skips_value_comparison(self):
        result = compare(torch.zeros(2, 3), torch.ones(3, 2))
        self.assertEqual(kinds(result), [("root", "shape")])
        self.assertIn("(2, 3)", result.differences[0].detail)
        self.assertIn("(3, 2)", result.differences[0].detail)
        self.assertIsNone(result.worst)
        self.assertEqual(result.leaves_compared, 0)

    def test_dtype_mismatch_also_compares_values(self):
        result = compare(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 3.0], dtype=torch.float64))
        self.assertEqual(kinds(result), [("root", "dtype"), ("root", "value")])
        self.assertIn("torch.float32", result.differences[0].detail)
        self.assertIn("torch.float64", result.differences[0].detail)
        self.assertEqual(result.differences[1].worst_index, (1,))

    def test_dtype_mismatch_with_equal_values_reports_only_dtype(self):
        result = compare(torch.tensor([1, 2]), torch.tensor([1, 2], dtype=torch.int32))
        self.assertEqual(kinds(result), [("root", "dtype")])

    def test_check_dtype_false_skips_dtype_differences(self):
        cases = [
            ("float32 vs float64", torch.tensor([1.0]), torch.tensor([1.0], dtype=torch.float64)),
            ("int64 vs float32", torch.tensor([2]), torch.tensor([2.0])),
            ("Python int vs float", 1, 1.0),
            ("tensor vs ndarray", torch.tensor([1.0]), np.array([1.0])),
        ]
        for name, actual, expected in cases:
            with self.subTest(name):
                self.assertEqual(kinds(compare(actual, expected)), [("root", "dtype")])
                self.assertTrue(compare(actual, expected, check_dtype=False).ok)

    def test_mixed_dtypes_use_the_wider_default_tolerance(self):
        # float16 vs float32: the float16 rtol (1e-3) applies to the promoted comparison.
        result = compare(torch.tensor([1.0005]), torch.tensor([1.0], dtype=torch.float16), check_dtype=False)
        self.assertTrue(result.ok)
        self.assertEqual(result.worst.tolerance, Tolerance(1e-5, 1e-3))

    def test_deep_nesting_does_not_hit_the_recursion_limit(self):
        actual, expected = [1.0], [2.0]
        for _ in range(5000):
            actual, expected = [actual], [expected]
        result = compare(actual, expected)
        self.assertEqual(result.total_differences, 1)
        self.assertEqual(result.differences[0].path, "root" + "[0]" * 5001)


class FloatLeafTest(unittest.TestCase):
    # dtype, default (atol, rtol), expected, inside-tolerance actual, outside-tolerance actual
    CASES = (
        (torch.float16, (1e-5, 1e-3), 1.0, 1 - 2**-11, 1 + 2**-9),
        (torch.bfloat16, (1e-5, 1.6e-2), 1.0, 1 + 2**-7, 1 + 2**-5),
        (torch.float32, (1e-5, 1.3e-6), 1.0, 1 + 8e-6, 1 + 1.5e-5),
        (torch.float64, (1e-7, 1e-7), 1.0, 1 + 1.5e-7, 1 + 2.5e-7),
        (torch.complex64, (1e-5, 1.3e-6), 1 + 1j, 1 + (1 + 8e-6) * 1j, 1 + (1 + 1.5e-5) * 1j),
        (torch.complex128, (1e-7, 1e-7), 1 + 1j, 1 + (1 + 1.5e-7) * 1j, 1 + (1 + 2.5e-7) * 1j),
    )

    def test_default_tolerances_just_inside_and_just_outside(self):
        for dtype, (atol, rtol), expected, inside, outside in self.CASES:
            expected_tensor = torch.tensor([expected], dtype=dtype)
            for label, actual, should_pass in (("inside", inside, True), ("outside", outside, False)):
                with self.subTest(dtype=dtype, case=label):
                    actual_tensor = torch.tensor([actual], dtype=dtype)
                    self.assertFalse(torch.equal(actual_tensor, expected_tensor), "the case must differ")
                    result = compare(actual_tensor, expected_tensor)
                    self.assertEqual(result.ok, should_pass)
                    self.assertEqual(result.worst.tolerance, Tolerance(atol, rtol))
                    if should_pass:
                        self.assertGreater(result.worst.usage, 0.0)
                        self.assertLessEqual(result.worst.usage, 1.0)
                    else:
                        self.assertGreater(result.worst.usage, 1.0)
                        self.assertEqual(kinds(result), [("root", "value")])
                        self.assertEqual(result.differences[0].tolerance, Tolerance(atol, rtol))

    def test_python_floats_and_complex_use_float64_defaults(self):
        cases = [
            ("float inside", 1.0 + 1.5e-7, 1.0, True),
            ("float outside", 1.0 + 2.5e-7, 1.0, False),
            ("complex inside", 1 + (1 + 1.5e-7) * 1j, 1 + 1j, True),
            ("complex outside", 1 + (1 + 2.5e-7) * 1j, 1 + 1j, False),
        ]
        for name, actual, expected, should_pass in cases:
            with self.subTest(name):
                result = compare(actual, expected)
                self.assertEqual(result.ok, should_pass)
                self.assertEqual(result.worst.tolerance, Tolerance(1e-7, 1e-7))

    def test_half_precision_values_are_reported_as_python_floats(self):
        actual = torch.tensor([1.0, 2.0], dtype=torch.bfloat16)
        expected = torch.tensor([1.0, 2.5], dtype=torch.bfloat16)
        difference = compare(actual, expected).differences[0]
        self.assertEqual((difference.actual_value, difference.expected_value), (2.0, 2.5))
        self.assertEqual(difference.max_abs_diff, 0.5)
        self.assertAlmostEqual(difference.max_rel_diff, 0.2)

    def test_complex_uses_the_magnitude_of_the_difference(self):
        result = compare(torch.tensor([3 + 4j]), torch.tensor([0j]), atol=4.0, rtol=0.0)
        difference = result.differences[0]
        self.assertAlmostEqual(difference.max_abs_diff, 5.0, places=6)
        self.assertEqual(difference.max_rel_diff, INF)
        self.assertEqual(difference.actual_value, 3 + 4j)
        self.assertTrue(compare(torch.tensor([3 + 4j]), torch.tensor([0j]), atol=5.0, rtol=0.0).ok)

    def test_worst_index_is_the_largest_tolerance_usage_not_the_largest_abs_diff(self):
        actual = torch.tensor([[100.5, 1.0, 1.1], [2.0, 2.0, 2.0]], dtype=torch.float64)
        expected = torch.tensor([[100.0, 1.0, 1.0], [2.0, 2.0, 2.0]], dtype=torch.float64)
        difference = compare(actual, expected, atol=0.0, rtol=0.01).differences[0]
        self.assertEqual(difference.mismatched, 1)  # 100.5 is within 1% of 100
        self.assertEqual(difference.total, 6)
        self.assertEqual(difference.worst_index, (0, 2))
        self.assertAlmostEqual(difference.actual_value, 1.1)
        self.assertEqual(difference.expected_value, 1.0)
        self.assertAlmostEqual(difference.max_abs_diff, 0.5)
        self.assertAlmostEqual(difference.max_rel_diff, 0.1)
        self.assertEqual(difference.tolerance, Tolerance(0.0, 0.01))

    def test_statistics_span_blocks_of_a_large_tensor(self):
        expected = torch.zeros(600_000)
        actual = expected.clone()
        actual[10] = 1e-3
        actual[500_000] = 2e-3
        actual[500_001] = 2e-3
        difference = compare(actual, expected).differences[0]
        self.assertEqual(difference.mismatched, 3)
        self.assertEqual(difference.worst_index, (500_000,))
        self.assertAlmostEqual(difference.max_abs_diff, 2e-3)

    def test_difference_equal_to_the_allowed_error_passes(self):
        result = compare(
            torch.tensor([1.5, 3.0], dtype=torch.float64),
            torch.tensor([1.0, 2.0], dtype=torch.float64),
            atol=0.0,
            rtol=0.5,
        )
        self.assertTrue(result.ok)
        self.assertEqual(result.worst.usage, 1.0)
        self.assertFalse(compare(1.5 + 1e-12, 1.0, atol=0.0, rtol=0.5).ok)

    def test_zero_against_zero_has_zero_relative_difference(self):
        actual = torch.tensor([0.0, 1.0 + 1e-6])
        expected = torch.tensor([0.0, 1.0])
        result = compare(actual, expected, atol=0.0, rtol=1e-5)
        self.assertTrue(result.ok)
        self.assertAlmostEqual(result.worst.max_rel_diff, 1e-6, delta=2e-7)

    def test_nonzero_against_zero_with_zero_tolerance_has_infinite_usage(self):
        result = compare(torch.tensor([1e-30]), torch.tensor([0.0]), atol=0.0, rtol=0.0)
        self.assertEqual(result.worst.usage, INF)
        self.assertEqual(result.differences[0].max_rel_diff, INF)

    def test_less_common_floating_dtypes(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # complex32 support is marked experimental
            cases = [
                (dtype, torch.tensor([1.0, 2.0]).to(dtype), torch.tensor([1.0, 3.0]).to(dtype))
                for dtype in (torch.float8_e4m3fn, torch.float8_e5m2, torch.complex32)
            ]
            for dtype, actual, expected in cases:
                with self.subTest(dtype=dtype):
                    self.assertTrue(compare(actual, actual.clone()).ok)
                    difference = compare(actual, expected).differences[0]
                    self.assertEqual((difference.mismatched, difference.worst_index), (1, (1,)))
                    self.assertEqual(difference.max_abs_diff, 1.0)

    def test_sparse_tensor_is_compared_densely(self):
        sparse = torch.sparse_coo_tensor([[0, 2]], [1.0, 2.0], (3,), check_invariants=True)
        self.assertTrue(compare(sparse, torch.tensor([1.0, 0.0, 2.0])).ok)

    def test_non_contiguous_empty_and_grad_tensors(self):
        base = torch.arange(6.0).reshape(2, 3)
        self.assertTrue(compare(base.t(), base.t().contiguous()).ok)
        self.assertTrue(compare(torch.zeros(0, 3), torch.zeros(0, 3)).ok)
        self.assertTrue(compare(torch.ones(2, requires_grad=True), torch.ones(2)).ok)
        changed = base.t().contiguous()
        changed[2, 1] = 50.0
        self.assertEqual(compare(base.t(), changed).differences[0].worst_index, (2, 1))


class NonFiniteTest(unittest.TestCase):
    @staticmethod
    def containers(values: list[float]) -> dict[str, object]:
        return {
            "tensor": torch.tensor(values),
            "bfloat16": torch.tensor(values, dtype=torch.bfloat16),
            "complex": torch.tensor(values, dtype=torch.complex64),
            "ndarray": np.array(values),
            "float": values[0] if len(values) == 1 else None,
        }

    def check(self, actual: list[float], expected: list[float], equal_nan: bool, should_pass: bool) -> None:
        actual_leaves, expected_leaves = self.containers(actual), self.containers(expected)
        for name, actual_leaf in actual_leaves.items():
            if actual_leaf is None:
                continue
            with self.subTest(leaf=name, actual=actual, expected=expected, equal_nan=equal_nan):
                result = compare(actual_leaf, expected_leaves[name], equal_nan=equal_nan)
                self.assertEqual(result.ok, should_pass)
                if not should_pass:
                    self.assertEqual(result.worst.usage, INF)

    def test_nan_policy(self):
        cases = [
            ([NAN], [NAN], False, False),
            ([NAN], [NAN], True, True),
            ([NAN], [1.0], True, False),
            ([1.0], [NAN], True, False),
            ([1.0, NAN], [1.0, NAN], True, True),
            ([NAN, 1.0], [1.0, NAN], True, False),
        ]
        for actual, expected, equal_nan, should_pass in cases:
            self.check(actual, expected, equal_nan, should_pass)

    def test_infinities(self):
        cases = [
            ([INF], [INF], True),
            ([-INF, 2.0], [-INF, 2.0], True),
            ([INF], [-INF], False),
            ([INF], [1e30], False),
            ([1e30], [INF], False),
        ]
        for actual, expected, should_pass in cases:
            self.check(actual, expected, False, should_pass)

    def test_nan_mismatch_statistics(self):
        difference = compare(torch.tensor([1.0, NAN, 3.0]), torch.tensor([1.0, 2.0, 3.5])).differences[0]
        self.assertEqual(difference.mismatched, 2)
        self.assertEqual(difference.worst_index, (1,))  # infinite usage beats the finite mismatch
        self.assertTrue(math.isnan(difference.max_abs_diff))
        self.assertTrue(math.isnan(difference.actual_value))

    def test_infinite_mismatch_statistics(self):
        difference = compare(torch.tensor([1.0, 2.0]), torch.tensor([1.0, INF])).differences[0]
        self.assertEqual(difference.max_abs_diff, INF)
        self.assertEqual(difference.max_rel_diff, INF)
        self.assertEqual(difference.worst_index, (1,))

    def test_matching_nans_and_infinities_contribute_zero(self):
        actual = torch.tensor([NAN, INF, 1.0])
        result = compare(actual, actual.clone(), equal_nan=True)
        self.assertTrue(result.ok)
        self.assertEqual((result.worst.usage, result.worst.max_abs_diff, result.worst.max_rel_diff), (0.0, 0.0, 0.0))

    def test_overflowing_difference_of_finite_values_is_a_mismatch(self):
        result = compare(torch.tensor([3e38]), torch.tensor([-3e38]))
        self.assertEqual(result.differences[0].max_abs_diff, INF)


class ExactLeafTest(unittest.TestCase):
    def test_integer_and_bool_tensors_are_exact_despite_tolerances(self):
        cases = [
            ("int64", torch.tensor([1, 2, 3]), torch.tensor([1, 5, 7]), 2, (1,), 2, 5),
            ("int8", torch.tensor([[1, 2], [3, 4]], dtype=torch.int8), torch.tensor([[1, 2], [3, 5]], dtype=torch.int8), 1, (1, 1), 4, 5),
            ("uint8", torch.tensor([0, 255], dtype=torch.uint8), torch.tensor([0, 254], dtype=torch.uint8), 1, (1,), 255, 254),
            ("bool", torch.tensor([True, False, True]), torch.tensor([True, True, False]), 2, (1,), False, True),
            ("ndarray int32", np.array([4, 5], dtype=np.int32), np.array([4, 6], dtype=np.int32), 1, (1,), 5, 6),
        ]  # fmt: skip
        for name, actual, expected, mismatched, index, actual_value, expected_value in cases:
            with self.subTest(name):
                result = compare(actual, expected, atol=1e9, rtol=1e9)
                self.assertEqual(kinds(result), [("root", "value")])
                difference = result.differences[0]
                self.assertEqual(difference.mismatched, mismatched)
                self.assertEqual(difference.worst_index, index)
                self.assertEqual((difference.actual_value, difference.expected_value), (actual_value, expected_value))
                self.assertIsNone(difference.tolerance)
                self.assertIsNone(result.worst)
                self.assertTrue(compare(actual, actual).ok)

    def test_unsigned_against_signed_is_exact_after_promotion(self):
        result = compare(torch.tensor([1, 2], dtype=torch.uint64), torch.tensor([1, 3]))
        self.assertEqual(kinds(result), [("root", "dtype"), ("root", "value")])
        self.assertIsNone(result.differences[1].tolerance)
        self.assertIsNone(result.worst)

    def test_integer_difference_statistics(self):
        difference = compare(torch.tensor([10, 0, 4]), torch.tensor([12, 0, 1])).differences[0]
        self.assertEqual(difference.total, 3)
        self.assertEqual(difference.max_abs_diff, 3.0)
        self.assertEqual(difference.max_rel_diff, 3.0)
        self.assertEqual(difference.worst_index, (0,))  # first mismatch, not the largest

    def test_python_scalars(self):
        cases = [
            ("int equal", 3, 3, []),
            ("int differs", 3, 4, [("root", "value")]),
            ("bool differs", True, False, [("root", "value")]),
            ("bool vs int", True, 1, [("root", "dtype")]),
            ("int vs float", 1, 1.5, [("root", "dtype"), ("root", "value")]),
            ("float differs", 1.0, 1.5, [("root", "value")]),
            ("complex differs", 1j, 2j, [("root", "value")]),
            ("big int equal", 2**70, 2**70, []),
            ("big int differs", 2**70, 2**70 + 1, [("root", "value")]),
            ("str differs", "a", "b", [("root", "value")]),
            ("bytes differs", b"a", b"b", [("root", "value")]),
            ("None equal", None, None, []),
            ("str equal", "same", "same", []),
        ]
        for name, actual, expected, expected_kinds in cases:
            with self.subTest(name):
                self.assertEqual(kinds(compare(actual, expected)), expected_kinds)

    def test_string_difference_keeps_values(self):
        difference = compare({"name": "adam"}, {"name": "sgd"}).differences[0]
        self.assertEqual((difference.actual_value, difference.expected_value), ("adam", "sgd"))
        self.assertIsNone(difference.mismatched)
        self.assertIn("'adam'", difference.detail)

    def test_sets(self):
        self.assertTrue(compare({1, 2}, {2, 1}).ok)
        result = compare({1, 2}, {2, 3})
        self.assertEqual(kinds(result), [("root", "value")])
        self.assertIn("only in actual {1}", result.differences[0].detail)
        self.assertIn("only in expected {3}", result.differences[0].detail)
        self.assertEqual(kinds(compare({1}, frozenset({1}))), [("root", "type")])

    def test_other_objects(self):
        cases = [
            ("equal dtypes", torch.float32, torch.float32, []),
            ("different dtypes", torch.float32, torch.float16, [("root", "value")]),
            ("devices", torch.device("cpu"), torch.device("cpu"), []),
            ("custom equal", Opaque(1), Opaque(1), []),
            ("custom differs", Opaque(1), Opaque(2), [("root", "value")]),
            ("object ndarray", np.array(["a", "b"]), np.array(["a", "c"]), [("root", "value")]),
            ("torch.Size", torch.Size([2, 3]), torch.Size([2, 4]), [("root[1]", "value")]),
        ]
        for name, actual, expected, expected_kinds in cases:
            with self.subTest(name):
                self.assertEqual(kinds(compare(actual, expected)), expected_kinds)

    def test_failing_equality_is_reported_not_raised(self):
        difference = compare(RaisingEq(), RaisingEq()).differences[0]
        self.assertEqual(difference.kind, "value")
        self.assertIn("cannot compare", difference.detail)


class NumpyTest(unittest.TestCase):
    def test_numpy_arrays_and_scalars(self):
        cases = [
            ("float32 arrays equal", np.ones(3, np.float32), np.ones(3, np.float32), []),
            ("float32 arrays differ", np.ones(3, np.float32), np.full(3, 2, np.float32), [("root", "value")]),
            ("float64 scalars inside", np.float64(1.0 + 5e-8), np.float64(1.0), []),
            ("float64 scalars outside", np.float64(1.0 + 1e-6), np.float64(1.0), [("root", "value")]),
            ("scalar vs 0-d tensor", np.float32(2.0), torch.tensor(2.0), []),
            ("int scalar vs int", np.int64(3), np.int64(4), [("root", "value")]),
            ("read-only array", np.broadcast_to(np.ones(1), (3,)), np.ones(3), []),
            ("big-endian array", np.ones(2, dtype=">f8"), np.ones(2), []),
        ]
        for name, actual, expected, expected_kinds in cases:
            with self.subTest(name):
                self.assertEqual(kinds(compare(actual, expected)), expected_kinds)

    def test_tensor_against_ndarray(self):
        cases = [
            ("agree", torch.tensor([1.0, 2.0]), np.array([1.0, 2.0], np.float32), []),
            ("agree reversed", np.array([1, 2]), torch.tensor([1, 2]), []),
            ("values differ", torch.tensor([1.0, 2.0]), np.array([1.0, 3.0], np.float32), [("root", "value")]),
            ("dtype differs", torch.tensor([1.0]), np.array([1.0]), [("root", "dtype")]),
            ("shape differs", torch.ones(2), np.ones(3, np.float32), [("root", "shape")]),
        ]
        for name, actual, expected, expected_kinds in cases:
            with self.subTest(name):
                self.assertEqual(kinds(compare(actual, expected)), expected_kinds)


class ToleranceSelectionTest(unittest.TestCase):
    def test_global_override(self):
        actual, expected = torch.tensor([1.001]), torch.tensor([1.0])
        self.assertFalse(compare(actual, expected).ok)
        result = compare(actual, expected, atol=1e-2, rtol=0.0)
        self.assertTrue(result.ok)
        self.assertEqual(result.worst.tolerance, Tolerance(1e-2, 0.0))

    def test_only_one_of_atol_rtol_keeps_the_dtype_default_for_the_other(self):
        actual, expected = torch.tensor([1.0]), torch.tensor([1.0])
        self.assertEqual(compare(actual, expected, atol=0.5).worst.tolerance, Tolerance(0.5, 1.3e-6))
        self.assertEqual(compare(actual, expected, rtol=0.5).worst.tolerance, Tolerance(1e-5, 0.5))

    def test_path_pattern_with_brackets_is_literal(self):
        actual = {"state": {0: {"exp_avg": torch.tensor([1.1])}, 1: {"exp_avg": torch.tensor([1.1])}}}
        expected = {"state": {0: {"exp_avg": torch.tensor([1.0])}, 1: {"exp_avg": torch.tensor([1.0])}}}
        exact_path = compare(actual, expected, path_tolerances={"root['state'][0]['exp_avg']": (0.2, 0.0)})
        self.assertEqual(kinds(exact_path), [("root['state'][1]['exp_avg']", "value")])
        wildcard = compare(actual, expected, path_tolerances={"root['state'][*]['exp_avg']": Tolerance(0.2, 0.0)})
        self.assertTrue(wildcard.ok)
        no_char_class = compare(actual, expected, path_tolerances={"root[s]*": (0.2, 0.0)})
        self.assertEqual(no_char_class.total_differences, 2)

    def test_question_mark_matches_one_character(self):
        actual = {"layer1": 1.5, "layer12": 1.5}
        expected = {"layer1": 1.0, "layer12": 1.0}
        result = compare(actual, expected, path_tolerances={"root['layer?']": (1.0, 0.0)})
        self.assertEqual(kinds(result), [("root['layer12']", "value")])

    def test_first_matching_pattern_wins_and_beats_global(self):
        patterns = {"root['w']": (0.3, 0.0), "root[*": (0.05, 0.0), "*": (1.0, 0.0)}
        result = compare({"w": 1.2, "v": 1.2}, {"w": 1.0, "v": 1.0}, atol=10.0, path_tolerances=patterns)
        self.assertEqual(kinds(result), [("root['v']", "value")])
        self.assertEqual(result.differences[0].tolerance, Tolerance(0.05, 0.0))

    def test_path_tolerances_do_not_relax_exact_leaves(self):
        result = compare({"n": 1}, {"n": 2}, path_tolerances={"*": (10.0, 10.0)})
        self.assertEqual(kinds(result), [("root['n']", "value")])


class ReportingTest(unittest.TestCase):
    def test_all_differences_are_reported_in_traversal_order(self):
        actual = {"a": torch.zeros(2), "b": [1, 2], "c": "x", "d": {"e": 1.0}}
        expected = {"a": torch.ones(2), "b": [1, 3, 4], "c": "y", "d": {"e": 2.0, "f": 0}}
        result = compare(actual, expected)
        self.assertEqual(
            kinds(result),
            [
                ("root['a']", "value"),
                ("root['b']", "length"),
                ("root['b'][1]", "value"),
                ("root['c']", "value"),
                ("root['d']['f']", "missing key"),
                ("root['d']['e']", "value"),
            ],
        )
        self.assertEqual(result.total_differences, 6)

    def test_cap_keeps_the_first_differences_and_counts_the_rest(self):
        result = compare(list(range(5)), [10, 11, 12, 13, 14], max_differences=2)
        self.assertEqual([d.path for d in result.differences], ["root[0]", "root[1]"])
        self.assertEqual(result.total_differences, 5)
        self.assertFalse(result.ok)
        report = result.format()
        self.assertTrue(report.endswith("... and 3 more differences"), report)
        self.assertIn("root[1]", report)
        self.assertNotIn("root[2]", report)
        self.assertTrue(result.format(limit=1).endswith("... and 4 more differences"))

    def test_format_lists_every_kept_difference_without_a_trailer(self):
        result = compare([1, 2], [3, 4])
        lines = result.format().splitlines()
        self.assertIn("2 differences", lines[0])
        self.assertEqual(sum("root[" in line for line in lines), 2)
        self.assertNotIn("more differences", result.format())
        self.assertIn("No differences", compare(1, 1).format())

    def test_difference_str_is_one_line_with_path_kind_numbers_and_tolerance(self):
        difference = compare({"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([1.0, 2.5])}).differences[0]
        text = str(difference)
        self.assertNotIn("\n", text)
        for fragment in ("root['w']", "value", "1 of 2", "0.5", "(1,)", "atol=1e-05", "rtol=1.3e-06"):
            self.assertIn(fragment, text)
        structural = str(Difference("root['x']", "missing key", "Key 'x' is missing from actual."))
        self.assertEqual(structural, "root['x']: missing key: Key 'x' is missing from actual.")

    def test_worst_leaf_statistics(self):
        actual = {"a": torch.tensor([1.0 + 2e-6]), "b": torch.tensor([1.0 + 8e-6]), "n": 3}
        expected = {"a": torch.tensor([1.0]), "b": torch.tensor([1.0]), "n": 3}
        result = compare(actual, expected)
        self.assertTrue(result.ok)
        self.assertIsInstance(result.worst, LeafStat)
        self.assertEqual(result.worst.path, "root['b']")
        self.assertGreater(result.worst.usage, 0.5)
        self.assertLessEqual(result.worst.usage, 1.0)
        self.assertAlmostEqual(result.worst.max_abs_diff, 8e-6, delta=2e-7)
        self.assertEqual(result.leaves_compared, 3)

        failing = compare({"a": torch.tensor([1.1])}, {"a": torch.tensor([1.0])})
        self.assertGreater(failing.worst.usage, 1.0)

    def test_worst_is_none_without_floating_point_leaves(self):
        self.assertIsNone(compare({"a": 1, "b": torch.tensor([1, 2])}, {"a": 1, "b": torch.tensor([1, 2])}).worst)

    def test_identical_tensors_have_zero_statistics(self):
        tensor = torch.randn(100)
        worst = compare(tensor, tensor.clone()).worst
        self.assertEqual((worst.usage, worst.max_abs_diff, worst.max_rel_diff), (0.0, 0.0, 0.0))


class AssertCloseTest(unittest.TestCase):
    def test_passes_silently(self):
        self.assertIsNone(assert_close({"a": torch.ones(3)}, {"a": torch.ones(3)}))

    def test_raises_comparison_error_listing_paths(self):
        with self.assertRaises(AssertionError) as caught:
            assert_close({"a": 1.0, "b": [1, 2]}, {"a": 2.0, "b": [1, 3]})
        error = caught.exception
        self.assertIsInstance(error, ComparisonError)
        self.assertEqual(error.result.total_differences, 2)
        self.assertIn("root['a']", str(error))
        self.assertIn("root['b'][1]", str(error))
        self.assertEqual(str(error), error.result.format())

    def test_forwards_keywords(self):
        assert_close(1.0, 1.05, atol=0.1)
        assert_close(NAN, NAN, equal_nan=True)
        assert_close(1, 1.0, check_dtype=False)
        with self.assertRaises(ComparisonError) as caught:
            assert_close([1, 2, 3], [4, 5, 6], max_differences=1, root="seq")
        self.assertEqual(caught.exception.result.differences[0].path, "seq[0]")
        self.assertIn("... and 2 more differences", str(caught.exception))

    def test_error_survives_pickling(self):
        with self.assertRaises(ComparisonError) as caught:
            assert_close({"a": 1}, {"a": 2})
        restored = pickle.loads(pickle.dumps(caught.exception))
        self.assertEqual(restored.result, caught.exception.result)
        self.assertEqual(str(restored), str(caught.exception))


class ValidationTest(unittest.TestCase):
    def test_bad_arguments_raise_value_error_naming_the_parameter(self):
        cases = [
            ("negative atol", {"atol": -1.0}, "atol"),
            ("nan rtol", {"rtol": NAN}, "rtol"),
            ("string atol", {"atol": "1e-5"}, "atol"),
            ("negative path tolerance", {"path_tolerances": {"root": (-1.0, 0.0)}}, "path_tolerances"),
            ("nan path tolerance", {"path_tolerances": {"root": (0.0, NAN)}}, "path_tolerances"),
            ("short path tolerance", {"path_tolerances": {"root": (1.0,)}}, "path_tolerances"),
            ("string path tolerance", {"path_tolerances": {"root": "loose"}}, "path_tolerances"),
            ("non-string pattern", {"path_tolerances": {1: (0.0, 0.0)}}, "path_tolerances"),
            ("not a mapping", {"path_tolerances": [("root", (0.0, 0.0))]}, "path_tolerances"),
            ("zero max_differences", {"max_differences": 0}, "max_differences"),
            ("float max_differences", {"max_differences": 2.5}, "max_differences"),
        ]
        for name, keywords, parameter in cases:
            with self.subTest(name):
                with self.assertRaises(ValueError) as caught:
                    compare(1.0, 1.0, **keywords)
                self.assertIn(parameter, str(caught.exception))
                self.assertIn("pass", str(caught.exception))

    def test_tolerance_validates_itself(self):
        with self.assertRaises(ValueError):
            Tolerance(-1e-3, 0.0)
        with self.assertRaises(ValueError):
            Tolerance(0.0, NAN)
        self.assertEqual(Tolerance(1, 0), Tolerance(1.0, 0.0))

    def test_truth_means_ok(self):
        self.assertFalse(compare({"a": 1.0}, {"a": 2.0}))
        self.assertTrue(compare({"a": 1.0}, {"a": 1.0}))
        with self.assertRaises(AssertionError):
            assert compare(torch.ones(3), torch.zeros(3)), "unequal values must not pass an assert"

    def test_format_rejects_negative_limit(self):
        with self.assertRaises(ValueError):
            compare(1, 2).format(limit=-1)


if __name__ == "__main__":
    unittest.main()
