"""RNG capture/restore and the RNGStateCallback's save/restore semantics."""

from __future__ import annotations

import io
import random
import unittest

import numpy as np
import torch

from conformance.runs.lightning.rng_callback import RNGStateCallback
from conformance.training.rng import capture_rng_state, restore_rng_state


def draw() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


class TestCaptureRestore(unittest.TestCase):
    def test_round_trip_reproduces_every_generator(self) -> None:
        random.gauss(0, 1)  # leaves a cached gaussian in python's state
        state = capture_rng_state()
        first = draw()
        restore_rng_state(state)
        self.assertEqual(draw(), first)

    def test_state_survives_a_weights_only_checkpoint(self) -> None:
        state = capture_rng_state()
        buffer = io.BytesIO()
        torch.save({"rng": state}, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=True)["rng"]
        first = draw()
        restore_rng_state(loaded)
        self.assertEqual(draw(), first)


class FakeTrainer:
    pass


class TestRNGStateCallback(unittest.TestCase):
    def test_training_stream_ignores_draws_between_batches(self) -> None:
        callback = RNGStateCallback()
        callback.on_train_batch_start(FakeTrainer(), None, None, 0)
        draw()
        callback.on_train_batch_end(FakeTrainer(), None, None, None, 0)
        expected = draw()
        callback.on_train_batch_start(FakeTrainer(), None, None, 1)  # e.g. after validation drew numbers
        self.assertEqual(draw(), expected)

    def test_checkpoint_restores_the_stream_at_the_first_resumed_batch(self) -> None:
        callback = RNGStateCallback()
        callback.on_train_batch_end(FakeTrainer(), None, None, None, 0)
        saved = callback.state_dict()
        expected = draw()
        resumed = RNGStateCallback()
        resumed.load_state_dict(saved)
        draw()  # a fresh process builds loaders and models after loading: the stream must not depend on it
        resumed.on_train_batch_start(FakeTrainer(), None, None, 0)
        self.assertEqual(draw(), expected)

    def test_a_different_world_size_is_refused(self) -> None:
        saved = {"per_rank": [capture_rng_state(), capture_rng_state()]}
        with self.assertRaises(RuntimeError) as caught:
            RNGStateCallback().load_state_dict(saved)
        self.assertIn("2 rank(s) but this run has 1", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
