"""Deliberately broken data modules, each a realistic resume bug, under DataModuleResumeConformance.

The conformance classes are defined at module level (multi-rank checks start processes that import them by
name); this module is not collected as tests. ``DATAMODULE_MUTANTS`` says what each must make fail.
"""

from __future__ import annotations

import unittest
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, Subset
from torch.utils.data.dataloader import default_collate

from conformance import ConsumedSamplesBatchSampler, DataModuleResumeConformance
from reference_models.data import SyntheticDataModule
from reference_models.mutants import Mutant

# --- broken data modules ------------------------------------------------------------------------------------------


class StatelessDataModule(SyntheticDataModule):
    """``state_dict`` returns nothing, so nothing is checkpointed: the resumed run replays from sample 0."""

    def state_dict(self) -> dict[str, Any]:
        return {}


class ForgetfulStepDataModule(SyntheticDataModule):
    """Never records the micro-batch count when its loader is built: a second resume double-counts consumed samples."""

    def train_dataloader(self) -> DataLoader:
        loader = super().train_dataloader()
        self._loader_batches_trained = 0
        return loader


class OffByOneBatchDataModule(SyntheticDataModule):
    """Reports one global batch fewer than it consumed: the resumed run repeats the last batch."""

    def state_dict(self) -> dict[str, int]:
        state = super().state_dict()
        return {**state, "consumed_samples": max(0, state["consumed_samples"] - self.global_batch_size)}


class EpochBlindShuffleSampler(ConsumedSamplesBatchSampler):
    """Shuffles every epoch with the same seed."""

    def epoch_order(self, epoch: int) -> torch.Tensor:
        return super().epoch_order(0)


class EpochBlindShuffleDataModule(SyntheticDataModule):
    """Seeds its shuffle without the epoch: every epoch has the same order."""

    def train_dataloader(self) -> DataLoader:
        loader = super().train_dataloader()
        sampler = loader.batch_sampler
        blind = EpochBlindShuffleSampler(
            sampler.total_samples, sampler.consumed_samples, sampler.micro_batch_size, sampler.global_batch_size,
            data_parallel_rank=sampler.data_parallel_rank, data_parallel_size=sampler.data_parallel_size,
            shuffle=True, seed=sampler.seed,
        )
        return DataLoader(self.train_set, batch_sampler=blind, num_workers=self.num_workers)


class UnshardedBatches(IterableDataset):
    """Yields every batch of a batch sampler from every loader worker (no worker sharding)."""

    def __init__(self, dataset: Any, batch_sampler: ConsumedSamplesBatchSampler) -> None:
        self.dataset = dataset
        self.batch_sampler = batch_sampler

    def __iter__(self):
        for indices in self.batch_sampler:
            yield default_collate([self.dataset[index] for index in indices])


class DuplicatingWorkersDataModule(SyntheticDataModule):
    """Streams batches through an iterable dataset that every worker replays in full."""

    def train_dataloader(self) -> DataLoader:
        sampler = super().train_dataloader().batch_sampler
        return DataLoader(UnshardedBatches(self.train_set, sampler), batch_size=None, num_workers=self.num_workers)


class TrainOffsetValidationDataModule(SyntheticDataModule):
    """Builds its validation sampler from the training position."""

    def val_dataloader(self) -> DataLoader:
        offset = self.consumed_samples % len(self.val_set)
        order = [(offset + index) % len(self.val_set) for index in range(len(self.val_set))]
        return DataLoader(Subset(self.val_set, order), batch_size=self.micro_batch_size)


class SetupBuiltSamplerDataModule(SyntheticDataModule):
    """Builds its train loader in ``setup()``, which Lightning calls before it restores the checkpoint."""

    def setup(self, stage: str) -> None:
        self._prebuilt = super().train_dataloader()

    def train_dataloader(self) -> DataLoader:
        return self._prebuilt


class SilentlyElasticDataModule(SyntheticDataModule):
    """Declares it does not support a different world size on resume, yet resumes there without a word."""

    supports_elastic_resume = False

    def _translate_elastic_resume(self) -> None:
        self._loaded_data_parallel_size = None


class UntranslatedElasticDataModule(SyntheticDataModule):
    """Resumes on another world size keeping Lightning's per-rank micro-batch count as it was: accumulation windows
    and the epoch's end shift."""

    def _translate_elastic_resume(self) -> None:
        self._loaded_data_parallel_size = None


class RankBlindDataModule(SyntheticDataModule):
    """Ignores its data-parallel rank: every rank trains on the same samples."""

    def _loader(self, dataset: Any, consumed: int, **kwargs: Any) -> DataLoader:
        loader = super()._loader(dataset, consumed, **kwargs)
        loader.batch_sampler.data_parallel_rank = 0
        return loader


# --- the conformance classes --------------------------------------------------------------------------------------


def _suite(name: str, datamodule_class: type) -> type:
    """A module-level DataModuleResumeConformance class over ``datamodule_class``."""
    return type(f"Mutant_{name}", (DataModuleResumeConformance, unittest.TestCase), {
        "__module__": __name__, "__qualname__": f"Mutant_{name}",
        "make_datamodule": classmethod(lambda cls: datamodule_class(num_val=12)),
    })


Mutant_state_dict_empty = _suite("state_dict_empty", StatelessDataModule)
Mutant_init_global_step_forgotten = _suite("init_global_step_forgotten", ForgetfulStepDataModule)
Mutant_consumed_off_by_one_batch = _suite("consumed_off_by_one_batch", OffByOneBatchDataModule)
Mutant_shuffle_without_epoch = _suite("shuffle_without_epoch", EpochBlindShuffleDataModule)
Mutant_workers_duplicate_shard = _suite("workers_duplicate_shard", DuplicatingWorkersDataModule)
Mutant_validation_keeps_train_offset = _suite("validation_keeps_train_offset", TrainOffsetValidationDataModule)
Mutant_sampler_built_in_setup = _suite("sampler_built_in_setup", SetupBuiltSamplerDataModule)
Mutant_ranks_share_samples = _suite("ranks_share_samples", RankBlindDataModule)
Mutant_elastic_resume_not_refused = _suite("elastic_resume_not_refused", SilentlyElasticDataModule)
Mutant_elastic_position_not_translated = _suite("elastic_position_not_translated", UntranslatedElasticDataModule)

#: What a data module that resumes at the wrong place also breaks.
_REPLAY = frozenset({"test_resume_continues_exactly", "test_no_sample_repeated_or_skipped",
                        "test_repeated_resumes", "test_state_restored_before_first_batch", "test_num_workers",
                        "test_multi_epoch_shuffle", "test_data_parallel_streams", "test_checkpoint_state",
                        "test_elastic_resume"})

DATAMODULE_MUTANTS: tuple[Mutant, ...] = (
    Mutant("state_dict_empty", "state_dict() returns {}: nothing is checkpointed, resume replays from sample 0",
           Mutant_state_dict_empty,
           kills={"test_checkpoint_state": "no data-module state in the checkpoint",
                  "test_resume_continues_exactly": "steps differ",
                  "test_no_sample_repeated_or_skipped": "repeated samples"},
           may_also_fail=_REPLAY),
    Mutant("init_global_step_forgotten", "the init-global-step is never recorded: the second resume double-counts",
           Mutant_init_global_step_forgotten,
           kills={"test_repeated_resumes": "after resuming at step"},
           may_also_fail=_REPLAY),
    Mutant("consumed_off_by_one_batch", "consumed samples lag one global batch: the resume repeats a batch",
           Mutant_consumed_off_by_one_batch,
           kills={"test_checkpoint_state": "consumed_samples=", "test_resume_continues_exactly": "steps differ",
                  "test_no_sample_repeated_or_skipped": "repeated samples"},
           may_also_fail=_REPLAY),
    Mutant("shuffle_without_epoch", "the shuffle is seeded without the epoch: every epoch has the same order",
           Mutant_shuffle_without_epoch,
           kills={"test_multi_epoch_shuffle": "the shuffle ignores the epoch"}),
    Mutant("workers_duplicate_shard", "each loader worker yields the whole shard: duplicates with num_workers > 0",
           Mutant_workers_duplicate_shard,
           kills={"test_num_workers": "num_workers=2"}),
    Mutant("validation_keeps_train_offset", "validation starts at the training position after a resume",
           Mutant_validation_keeps_train_offset,
           kills={"test_validation_starts_at_first_sample": "resumed"}),
    Mutant("sampler_built_in_setup", "the train loader is built in setup(), before Lightning restores the state",
           Mutant_sampler_built_in_setup,
           kills={"test_state_restored_before_first_batch": "the state was applied after the loader was built"},
           may_also_fail=_REPLAY),
    Mutant("elastic_resume_not_refused", "declares no elastic resume, yet resumes 1 -> 2 ranks on a shifted epoch",
           Mutant_elastic_resume_not_refused,
           kills={"test_elastic_resume": "resumed without refusing"}),
    Mutant("elastic_position_not_translated", "resumes on another world size with Lightning's per-rank position as "
           "saved: the epoch's remaining steps and accumulation windows shift",
           Mutant_elastic_position_not_translated,
           kills={"test_elastic_resume": "1 -> 2 ranks: step 4 drew samples"}),
    Mutant("ranks_share_samples", "every data-parallel rank reads rank 0's shard",
           Mutant_ranks_share_samples,
           kills={"test_data_parallel_streams": "ranks share samples"},
           may_also_fail=frozenset({"test_elastic_resume"})),
)
