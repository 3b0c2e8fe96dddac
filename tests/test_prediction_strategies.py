"""A prediction recipe may bring its own strategy: named DDP strategies run as the kit's rank processes, and
``model_parallel_size`` must match the replicas the strategy forms."""

from __future__ import annotations

import unittest
from typing import Any

from conformance import ConformanceSetupError, PredictionWriterConformance
from reference_models.recipes import PredictionRecipe
from tests import distributed_recipes


class TestPredictionWriterUnderTheRecipesDDPSpawnStrategy(PredictionRecipe, PredictionWriterConformance,
                                                          unittest.TestCase):
    """A recipe whose trainer_kwargs (shared with its training) name "ddp_spawn": every check passes (Lightning's
    own spawn launcher would refuse return_predictions=True)."""

    @classmethod
    def trainer_kwargs(cls) -> dict[str, Any]:
        return {"strategy": "ddp_spawn"}


class TestReplicasMustMatchTheStrategy(unittest.TestCase):
    def test_model_parallel_size_without_a_strategy_is_a_setup_error(self) -> None:
        cls = type("NoStrategy", (PredictionRecipe, PredictionWriterConformance, unittest.TestCase),
                   {"model_parallel_size": 2})
        with self.assertRaisesRegex(ConformanceSetupError, r"model_parallel_size = 2 needs the model-parallel "
                                                           r"strategy that forms those replicas"):
            cls.validate_settings()

    def test_replicas_the_strategy_does_not_form_are_a_setup_error(self) -> None:
        with self.assertRaisesRegex(ConformanceSetupError, r"the reference run had 2 ranks and its strategy formed "
                                                           r"model replicas led by data-parallel ranks \[0, 1\], not 1 "
                                                           r"replica\(s\) of model_parallel_size = 2 ranks"):
            distributed_recipes.DDPReplicasDeclaredAsModelParallel.setUpClass()


if __name__ == "__main__":
    unittest.main()
