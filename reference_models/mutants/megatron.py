"""Broken Megatron-core recipes (tensor parallelism over CPU ranks): each a realistic bug of a TP recipe, under the
suite that must catch it (needs megatron-core: ``tox -e nemo``).

The conformance classes are defined at module level, where their runs' fresh rank processes import them by name.
"""

from __future__ import annotations

import unittest
from pathlib import Path
from typing import Any
from unittest import mock

import lightning.pytorch as pl

from conformance import PredictionWriter, PredictionWriterConformance, RNGStateCallback, StopAndGoConformance
from conformance.predictions import writer_base
from reference_models.megatron_recipes import MegatronGPTPredictionRecipe, MegatronGPTRecipe
from reference_models.mutants import Mutant
from reference_models.mutants.stop_and_go import UNDECLARED_CHECKS, WEIGHTS_DRIFT

__all__ = ["MEGATRON_MUTANTS"]


class RNGCallbackWithoutTracker(RNGStateCallback):
    """RNG checkpointing written before the model went tensor-parallel: it keeps python, numpy and torch, not
    Megatron's model-parallel tracker, whose stream draws the attention dropout inside each TP rank's heads."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._carried.pop("model_parallel", None)


class Mutant_tracker_not_restored(MegatronGPTRecipe, StopAndGoConformance, unittest.TestCase):
    tensor_parallel_size = 2
    num_steps = 6
    stop_step = 3

    @classmethod
    def make_callbacks(cls) -> list[pl.Callback]:
        return [RNGCallbackWithoutTracker()]


class Mutant_writes_on_every_tp_rank(MegatronGPTPredictionRecipe, PredictionWriterConformance,
                                     unittest.TestCase):
    """Every tensor-parallel rank writes its copy of the gathered logits."""

    @classmethod
    def make_writer(cls, output_dir: Path) -> PredictionWriter:
        return PredictionWriter(output_dir, save_all_model_parallel_ranks=True)


class SkipsFinishedBatchesAlone(PredictionWriter):
    """The kit's writer without the replica's agreement on a resumed job (as it was before tensor parallelism was
    certified): only the writing rank knows which batches the crashed job finished, so it skips them while the
    other TP rank of its replica computes them, and their collectives no longer pair up."""

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with mock.patch.object(writer_base, "from_replica_writer", lambda value, rank: value):
            super().on_predict_start(trainer, pl_module)


class Mutant_tp_ranks_skip_different_batches(MegatronGPTPredictionRecipe, PredictionWriterConformance,
                                             unittest.TestCase):
    @classmethod
    def make_writer(cls, output_dir: Path) -> PredictionWriter:
        return SkipsFinishedBatchesAlone(output_dir)


MEGATRON_MUTANTS: tuple[Mutant, ...] = (
    Mutant("tracker_not_restored", "the RNG callback leaves out Megatron's model-parallel tracker: attention "
           "dropout draws other masks after the resume", Mutant_tracker_not_restored,
           kills={"test_rng_state": ("at optimizer step 4, micro-batch 0 (after the resume); 3 of 3 compared records "
                                     "of 'rng_state' differ; root['model_parallel']"),
                  "test_train_loss": "after the resume"},
           may_also_fail=WEIGHTS_DRIFT, skips=UNDECLARED_CHECKS),
    Mutant("writes_on_every_tp_rank", "both tensor-parallel ranks of a replica write the replica's predictions",
           Mutant_writes_on_every_tp_rank,
           kills={"test_file_layout": "rank 1 wrote",
                  "test_every_sample_exactly_once": "were written more than once",
                  "test_predictions_equal_in_memory": "were written more than once"},
           may_also_fail=frozenset({"test_batch_and_epoch_intervals_agree", "test_files_per_subdir",
                                    "test_exception_leaves_valid_output", "test_resume_after_crash"})),
    Mutant("tp_ranks_skip_different_batches", "on a resumed job only the writing TP rank skips the finished "
           "batches", Mutant_tp_ranks_skip_different_batches,
           kills={"test_resume_after_crash": "the resumed run failed"}),
)
