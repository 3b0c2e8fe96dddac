"""The pickle-free record format round-trips every value a record may hold, and refuses the rest."""

from __future__ import annotations

import unittest

import torch

from conformance.compare import compare
from conformance.training import recordfile


class TestRecordFile(unittest.TestCase):
    def test_round_trip_of_every_supported_value(self) -> None:
        value = {
            "floats": [torch.randn(3, 4), torch.randn(2, dtype=torch.bfloat16), torch.randn(2).half()],
            "exact": (torch.arange(6).reshape(2, 3), torch.tensor([True, False]), torch.tensor(7, dtype=torch.uint8)),
            "complex": torch.randn(2, dtype=torch.complex64),
            "empty": torch.empty(0, 3),
            "strided": torch.arange(12.0).reshape(3, 4).t(),
            0: None, 1.5: "str", (1, "k"): b"\x00bytes", "scalars": [1, 2.5, True, 1 + 2j, float("nan")],
        }
        decoded = recordfile.decode(recordfile.encode(value))
        result = compare(decoded, value, atol=0, rtol=0, equal_nan=True)
        self.assertTrue(result.ok, result.format())
        self.assertIsInstance(decoded["exact"], tuple)
        self.assertEqual(decoded["strided"].shape, (4, 3))

    def test_decoded_tensors_are_aligned_and_independent(self) -> None:
        data = bytearray(recordfile.encode([torch.ones(3), torch.zeros(2, dtype=torch.float64)]))
        first, second = recordfile.decode(data)
        first += 1
        self.assertTrue(torch.equal(second, torch.zeros(2, dtype=torch.float64)))
        self.assertEqual(second.data_ptr() % 8, 0)

    def test_unsupported_values_are_refused(self) -> None:
        for value in [object(), {1, 2}, torch.ones(2).to_sparse()]:
            with self.subTest(value=type(value).__name__), self.assertRaises(TypeError):
                recordfile.encode(value)

    def test_corrupt_data_is_detected(self) -> None:
        data = recordfile.encode(torch.ones(4))
        with self.assertRaises(ValueError):
            recordfile.decode(data + b"trailing")


if __name__ == "__main__":
    unittest.main()


class TestIdenticalWithoutNaN(unittest.TestCase):
    """The shortcut of the trajectory checks: only records that are the same bytes and hold no NaN skip comparing."""

    def identical(self, first: object, second: object) -> bool:
        return recordfile.identical_without_nan(bytearray(recordfile.encode(first)),
                                                bytearray(recordfile.encode(second)))

    def test_the_same_values_without_nan_are_identical(self) -> None:
        value = {"w": torch.randn(40, 40), "step": torch.tensor(3), "lr": [0.1, 2], "b": torch.randn(3).bfloat16()}
        self.assertTrue(self.identical(value, value))
        self.assertTrue(self.identical([torch.arange(5), "text"], [torch.arange(5), "text"]))

    def test_a_nan_anywhere_sends_the_records_to_the_comparison(self) -> None:
        for name, value in [("float32", torch.tensor([1.0, float("nan")])),
                            ("bfloat16", torch.tensor([float("nan")], dtype=torch.bfloat16)),
                            ("complex64", torch.tensor([complex(0, float("nan"))])),
                            ("python float", {"lr": float("nan")}),
                            ("large", torch.cat([torch.zeros(5000), torch.tensor([float("nan")])]))]:
            with self.subTest(name):
                self.assertFalse(self.identical(value, value))

    def test_values_that_differ_in_any_bit_are_not_identical(self) -> None:
        self.assertFalse(self.identical(torch.tensor([0.0]), torch.tensor([-0.0])))
        self.assertFalse(self.identical(torch.zeros(5000), torch.cat([torch.zeros(4999), torch.ones(1)])))
        self.assertFalse(self.identical([1, 2], [1, 3]))
        self.assertFalse(self.identical(torch.zeros(2), torch.zeros(3)))

    def test_a_dtype_it_does_not_know_is_compared(self) -> None:
        value = torch.zeros(4, dtype=torch.float8_e4m3fn)
        self.assertFalse(self.identical(value, value))

    def test_bytes_that_look_like_a_nan_of_another_dtype_are_no_nan(self) -> None:
        looks_like_a_bfloat16_nan = torch.tensor([0x3F807FC1], dtype=torch.int32).view(torch.float32)  # ~1.0039
        value = {"a": looks_like_a_bfloat16_nan, "b": torch.zeros(2, dtype=torch.bfloat16)}
        self.assertTrue(self.identical(value, value))


class TestEncodingReusingLayouts(unittest.TestCase):
    """encode_parts_reusing writes exactly encode()'s bytes, first time and every time after, whatever the values."""

    def states(self) -> list[object]:
        model = torch.nn.Sequential(torch.nn.Linear(300, 200), torch.nn.LayerNorm(200), torch.nn.Linear(200, 3))
        optimizer = torch.optim.AdamW(model.parameters())
        states = []
        for _ in range(3):
            model(torch.randn(4, 300)).sum().backward()
            optimizer.step()
            states.append([optimizer.state_dict()])  # large (>= 64 KiB) and small tensors, Python numbers
        mixed = {"views": torch.arange(20.0).reshape(4, 5).t(), "empty": torch.empty(0, 3), "b": torch.ones(3).bool(),
                 "c": torch.randn(2, dtype=torch.complex64), "h": torch.randn(5).bfloat16(), "n": None}
        return [*states, mixed, {**mixed, "views": torch.arange(20.0, 40.0).reshape(4, 5).t()}]

    def test_the_same_bytes_as_encode(self) -> None:
        for index, value in enumerate(self.states() * 2):  # the second round finds every layout cached
            with self.subTest(index=index):
                self.assertEqual(b"".join(bytes(part) for part in recordfile.encode_parts_reusing(value)),
                                 recordfile.encode(value))

    def test_tensors_that_need_grad_are_copied_without_recording_it(self) -> None:
        weight = torch.randn(3, 4, requires_grad=True)
        self.assertEqual(b"".join(bytes(part) for part in recordfile.encode_parts_reusing({"w": weight})),
                         recordfile.encode({"w": weight.detach()}))
