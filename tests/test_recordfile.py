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
