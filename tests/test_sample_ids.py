"""Finding sample ids in batches: the default of the suites' sample_ids hook."""

from __future__ import annotations

import unittest

import numpy as np
import torch

from conformance.sample_ids import SampleIdError, default_sample_ids, ids_as_list


class TestDefaultSampleIds(unittest.TestCase):
    def test_known_keys_in_order(self) -> None:
        self.assertEqual(default_sample_ids({"idx": torch.tensor([3, 1]), "tokens": torch.ones(2, 4)}), [3, 1])
        self.assertEqual(default_sample_ids({"index": [5, 6]}), [5, 6])
        self.assertEqual(default_sample_ids({"sample_id": np.array([7])}), [7])
        self.assertEqual(default_sample_ids({"id": torch.tensor(9)}), [9])

    def test_missing_ids_name_the_keys_and_the_fix(self) -> None:
        with self.assertRaises(SampleIdError) as caught:
            default_sample_ids({"tokens": torch.ones(2, 4), "labels": torch.ones(2)})
        message = str(caught.exception)
        for phrase in ("['labels', 'tokens']", "'idx'", "override the classmethod sample_ids(batch)"):
            self.assertIn(phrase, message)
        with self.assertRaises(SampleIdError):
            default_sample_ids(torch.ones(3))

    def test_ids_must_be_integers(self) -> None:
        for bad in (torch.tensor([1.0, 2.0]), [1, "2"], [True], "12", 3.5):
            with self.subTest(bad=bad), self.assertRaises(SampleIdError):
                ids_as_list(bad)


if __name__ == "__main__":
    unittest.main()
