"""Broken NeMo 2 recipes (nl.MegatronStrategy, on CPU under the kit's emulation): each a realistic bug of a NeMo
recipe, under the suite that must catch it (needs nemo-toolkit 2.7: ``tox -e nemo``).

The conformance classes are defined at module level, where their runs' fresh rank processes import them by name.
"""

from __future__ import annotations

import unittest

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from conformance import StopAndGoConformance
from reference_models.mutants import Mutant
from reference_models.mutants.stop_and_go import UNDECLARED_CHECKS, WEIGHTS_DRIFT
from reference_models.nemo_data import NeMoSamplerDataModule
from reference_models.nemo_gpt import NeMoGPTRecipe

__all__ = ["NEMO_MUTANTS"]


class Mutant_nemo_rng_not_restored(NeMoGPTRecipe, StopAndGoConformance, unittest.TestCase):
    """The recipe as NeMo leaves it: NeMo's checkpoints hold no random state, and no callback adds it."""

    @classmethod
    def make_callbacks(cls) -> list[pl.Callback]:
        return []


class ForgetsInitGlobalStep(NeMoSamplerDataModule):
    """Counts consumed samples from the global step as if training had started at step 0: after a resume, the
    steps before the checkpoint are counted twice (once in the restored count, once in the global step)."""

    def train_dataloader(self) -> DataLoader:
        loader = super().train_dataloader()
        self.init_global_step = self.data_sampler.init_global_step = 0
        return loader


class Mutant_sampler_forgets_init_global_step(NeMoGPTRecipe, StopAndGoConformance, unittest.TestCase):
    @classmethod
    def make_datamodule(cls) -> pl.LightningDataModule:
        return ForgetsInitGlobalStep(micro_batch_size=2, global_batch_size=4, train_samples=64)


NEMO_MUTANTS: tuple[Mutant, ...] = (
    Mutant("nemo_rng_not_restored", "a NeMo recipe with dropout and no RNG checkpointing (NeMo saves none): "
           "dropout draws other masks after the resume", Mutant_nemo_rng_not_restored,
           kills={"test_rng_state": "at optimizer step 4, micro-batch 0 (after the resume)",
                  "test_train_loss": "after the resume"},
           may_also_fail=WEIGHTS_DRIFT, skips=UNDECLARED_CHECKS),
    Mutant("sampler_forgets_init_global_step", "the data module on MegatronDataSampler counts consumed samples "
           "from step 0 after a resume", Mutant_sampler_forgets_init_global_step,
           kills={"test_consumed_samples": "after the resume",
                  "test_initial_consumed_samples": "consumed"},
           skips=UNDECLARED_CHECKS),
)
