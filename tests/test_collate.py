"""Collation of prediction batches: in memory, and as a streaming plan of byte segments that must agree."""

from __future__ import annotations

import unittest

import torch

from conformance.predictions.collate import (
    TENSOR_KEY,
    CollationDims,
    Pad,
    collate,
    collation_plan,
    flatten_prediction,
    num_rows,
    unflatten_prediction,
)
from conformance.predictions.formats import tensor_bytes


def assemble(plan, parts: list[torch.Tensor]) -> bytes:
    """The bytes a streaming writer would produce from a plan (padding as zeros)."""
    data = [bytes(tensor_bytes(part)) for part in parts]
    return b"".join(b"\0" * piece.length if isinstance(piece, Pad) else data[piece.part][piece.offset:piece.offset
                    + piece.length] for piece in plan)


class TestCollate(unittest.TestCase):
    def check_plan_matches_memory(self, key: str, parts: list[torch.Tensor], dims: CollationDims) -> None:
        expected = collate([{key: part} for part in parts], dims)[key]
        shape, plan = collation_plan(key, [tuple(part.shape) for part in parts], dims, parts[0].element_size())
        self.assertEqual(shape, tuple(expected.shape))
        self.assertEqual(assemble(plan, parts), bytes(tensor_bytes(expected)))

    def test_batch_first_with_ragged_sequences(self) -> None:
        parts = [torch.randn(3, length, 5) for length in (4, 7, 2)]
        self.check_plan_matches_memory("logits", parts, CollationDims())
        self.assertEqual(collate([{"x": part} for part in parts], CollationDims())["x"].shape, (9, 7, 5))

    def test_sequence_first_token_logits(self) -> None:
        parts = [torch.randn(length, 2, 3) for length in (5, 3, 6)]
        collated = collate([{"token_logits": part} for part in parts], CollationDims())["token_logits"]
        self.assertEqual(collated.shape, (6, 6, 3))
        self.assertTrue(torch.equal(collated[:3, 2:4], parts[1]))
        self.assertTrue(torch.equal(collated[3:, 2:4], torch.zeros(3, 2, 3)))
        self.check_plan_matches_memory("token_logits", parts, CollationDims())

    def test_batch_dim_after_outer_dims_and_seq_after_batch(self) -> None:
        dims = CollationDims({"x": 1}, {"x": 3})
        parts = [torch.randn(2, batch, 3, length) for batch, length in ((2, 4), (1, 6))]
        self.check_plan_matches_memory("x", parts, dims)

    def test_vectors_and_int_dtypes_have_no_sequence_dim(self) -> None:
        parts = [torch.arange(4), torch.arange(4, 6)]
        self.check_plan_matches_memory("idx", parts, CollationDims())
        _, plan = collation_plan("idx", [(4,), (2,)], CollationDims(), 8)
        self.assertEqual(len(plan), 2)  # one segment per part: nothing is split or padded

    def test_unpadded_batches_are_one_segment_per_part(self) -> None:
        _, plan = collation_plan("x", [(3, 4, 5)] * 3, CollationDims(), 4)
        self.assertEqual(len(plan), 3)

    def test_mismatched_other_dims_are_refused(self) -> None:
        with self.assertRaisesRegex(ValueError, "only the batch dim"):
            collate([{"x": torch.zeros(2, 3, 4)}, {"x": torch.zeros(2, 3, 5)}], CollationDims())

    def test_mismatched_keys_are_refused(self) -> None:
        with self.assertRaisesRegex(ValueError, "same keys"):
            collate([{"x": torch.zeros(2)}, {"y": torch.zeros(2)}], CollationDims())


class TestFlatten(unittest.TestCase):
    def test_kinds(self) -> None:
        tensor = torch.ones(2)
        kind, flat = flatten_prediction(tensor, "p")
        self.assertEqual((kind, list(flat)), ("tensor", [TENSOR_KEY]))
        self.assertIsNone(flatten_prediction(None, "p"))
        kind, flat = flatten_prediction({"a": tensor, "b": None}, "p")
        self.assertEqual((kind, list(flat)), ("dict", ["a"]))
        self.assertIs(unflatten_prediction("tensor", {TENSOR_KEY: tensor, "batch_idx": torch.zeros(1)}), tensor)

    def test_bad_values_are_refused_with_the_fix(self) -> None:
        with self.assertRaisesRegex(TypeError, r"prediction\['names'\] is a list"):
            flatten_prediction({"names": ["a"]}, "p")
        with self.assertRaisesRegex(ValueError, "reserved"):
            flatten_prediction({"batch_idx": torch.zeros(1)}, "p")
        with self.assertRaisesRegex(TypeError, "dict of tensors, a tensor or None"):
            flatten_prediction([torch.zeros(1)], "p")

    def test_keys_must_agree_on_rows(self) -> None:
        with self.assertRaisesRegex(ValueError, "disagree on the batch size"):
            num_rows({"a": torch.zeros(2, 3), "b": torch.zeros(3)}, CollationDims(), "p")


if __name__ == "__main__":
    unittest.main()
