"""Megatron-core's model-parallel RNG tracker on CPU, and its states in the kit's RNG snapshots (runs where
Megatron-core is installed: `tox -e nemo`; skipped, saying so, elsewhere)."""

from __future__ import annotations

import io
import unittest

import torch

from conformance.training.rng import capture_rng_state, restore_rng_state
from tests.megatron_support import HAS_MEGATRON, MISSING


@unittest.skipUnless(HAS_MEGATRON, MISSING)
class TestCPUModelParallelTracker(unittest.TestCase):
    def setUp(self) -> None:
        from megatron.core.tensor_parallel import random as megatron_random

        from conformance.runs.megatron import cpu_tracker

        self.megatron_random = megatron_random
        self.cpu_tracker = cpu_tracker
        saved = (megatron_random._CUDA_RNG_STATE_TRACKER, megatron_random._CUDA_RNG_STATE_TRACKER_INITIALIZED)
        self.addCleanup(self._restore_tracker, saved)

    def _restore_tracker(self, saved: tuple) -> None:
        self.megatron_random._CUDA_RNG_STATE_TRACKER, self.megatron_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = saved

    def dropout_mask(self) -> torch.Tensor:
        with self.megatron_random.get_cuda_rng_tracker().fork():
            return torch.nn.functional.dropout(torch.ones(64), p=0.5)

    def test_it_becomes_megatrons_tracker_with_a_stream_per_tensor_parallel_rank(self) -> None:
        self.cpu_tracker.cpu_model_parallel_seed(7, tp_rank=0)
        first = self.megatron_random.get_cuda_rng_tracker().get_states()
        mask_rank0 = self.dropout_mask()
        self.cpu_tracker.cpu_model_parallel_seed(7, tp_rank=1)
        second = self.megatron_random.get_cuda_rng_tracker().get_states()
        name = self.megatron_random._MODEL_PARALLEL_RNG_TRACKER_NAME
        data = self.megatron_random._DATA_PARALLEL_RNG_TRACKER_NAME
        self.assertFalse(torch.equal(first[name], second[name]), "tensor-parallel ranks draw different dropout")
        self.assertTrue(torch.equal(first[data], second[data]), "the data-parallel stream is shared")
        self.assertFalse(torch.equal(mask_rank0, self.dropout_mask()))

    def test_fork_leaves_the_default_stream_where_it_was(self) -> None:
        self.cpu_tracker.cpu_model_parallel_seed(3, tp_rank=0)
        before = torch.get_rng_state()
        first, second = self.dropout_mask(), self.dropout_mask()
        self.assertTrue(torch.equal(torch.get_rng_state(), before))
        self.assertFalse(torch.equal(first, second), "the forked stream moves on")

    def test_snapshots_carry_the_tracker_and_restoring_replays_the_same_masks(self) -> None:
        self.cpu_tracker.cpu_model_parallel_seed(5, tp_rank=1)
        snapshot = capture_rng_state()
        self.assertIn("model_parallel", snapshot)
        expected = self.dropout_mask()
        self.dropout_mask()
        buffer = io.BytesIO()
        torch.save(snapshot, buffer)
        buffer.seek(0)
        restore_rng_state(torch.load(buffer, weights_only=True))  # a checkpoint holding it loads weights-only
        self.assertTrue(torch.equal(self.dropout_mask(), expected))

    def test_no_tracker_means_no_entry(self) -> None:
        self.megatron_random._CUDA_RNG_STATE_TRACKER = None
        self.megatron_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = False
        self.assertNotIn("model_parallel", capture_rng_state())


class TestWithoutMegatronImported(unittest.TestCase):
    def test_snapshots_never_import_megatron(self) -> None:
        import subprocess
        import sys

        code = ("import sys; from conformance.training.rng import capture_rng_state; capture_rng_state(); "
                "print(any(name.startswith('megatron') for name in sys.modules))")
        output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        self.assertEqual(output.strip(), "False")


if __name__ == "__main__":
    unittest.main()
