"""The Megatron-core GPT and BERT at TP=1 and at TP=2 over 2 rank processes pass the stop-and-go and
prediction-writer suites, and TP=2 is real tensor parallelism (needs megatron-core: ``tox -e nemo``)."""

from tests.megatron_support import require_megatron

require_megatron()

import tempfile
import unittest

import torch

from conformance.runs.backend import FitPlan
from conformance.runs.lightning.fit import run_fits
from reference_models.certify_megatron import (  # noqa: F401 - collected as tests
    TestMegatronBERTStopAndGo,
    TestMegatronBERTTensorParallelStopAndGo,
    TestMegatronGPTPredictionWriter,
    TestMegatronGPTStopAndGo,
    TestMegatronGPTTensorParallelPredictionWriter,
    TestMegatronGPTTensorParallelStopAndGo,
)
from reference_models.megatron_gpt import MegatronGPT
from reference_models.megatron_recipes import MegatronGPTRecipe


class DeterministicMegatronGPT(MegatronGPTRecipe):
    """The TP recipe with dropout off, so that tensor-parallel sizes can be compared number for number."""

    @classmethod
    def make_model(cls) -> MegatronGPT:
        return MegatronGPT(dropout=0.0)

    @classmethod
    def consumed_samples(cls, trainer: object) -> None:
        return None


class DeterministicMegatronGPTOnTwoRanks(DeterministicMegatronGPT):
    tensor_parallel_size = 2


class TestTensorParallelIsReal(unittest.TestCase):
    def test_two_ranks_hold_halves_of_the_model_and_train_like_one(self) -> None:
        with tempfile.TemporaryDirectory() as folder:
            runs = run_fits(DeterministicMegatronGPT, [FitPlan("tp1", folder, max_steps=3, seed=0)],
                            in_process=False, deadline_s=300)
            runs += run_fits(DeterministicMegatronGPTOnTwoRanks, [FitPlan("tp2", folder, max_steps=3, seed=0)],
                             in_process=False, deadline_s=300)
            [[tp1], [rank0, rank1]] = runs
            self.assertEqual([run.error for run in (tp1, rank0, rank1)], [None, None, None])
            keys = tp1.records.keys("train_loss")
            self.assertEqual(len(keys), 3)
            for key in keys:
                whole = float(tp1.records.read("train_loss", key))
                for rank in (rank0, rank1):
                    self.assertAlmostEqual(float(rank.records.read("train_loss", key)), whole, places=5)
            [step] = tp1.records.keys("final_weights")
            weights = [run.records.read("final_weights", step) for run in (tp1, rank0, rank1)]
            name = next(name for name in weights[0] if name.endswith("linear_fc1.weight"))
            self.assertEqual(weights[1][name].shape[0] * 2, weights[0][name].shape[0], "each rank holds half")
            self.assertTrue(torch.allclose(torch.cat([weights[1][name], weights[2][name]]), weights[0][name],
                                           atol=1e-5), "the two halves are the one-rank matrix")
