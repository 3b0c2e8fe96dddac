"""Data modules as outside authors wrote them, under DataModuleResumeConformance (classes at module level: the
two-rank checks import them by name in fresh processes). Not collected: tests use them through this module."""

from __future__ import annotations

import unittest
from typing import Any

from torch.utils.data import DataLoader

from conformance import DataModuleResumeConformance
from conformance.training.data import resolve_data_parallel
from reference_models.data import SyntheticDataModule, SyntheticTokens


class ShardServerDownOnTwoRanks(SyntheticDataModule):
    """Declares no elastic resume and fails on two ranks for an unrelated reason."""

    supports_elastic_resume = False

    def train_dataloader(self) -> DataLoader:
        if resolve_data_parallel(self.trainer)[1] == 2:
            raise RuntimeError("the shard server is down")
        return super().train_dataloader()


class UndeclaredButRefusing(SyntheticDataModule):
    """Refuses another world size (ResumableDataModule's refusal) without declaring supports_elastic_resume."""

    supports_elastic_resume = None


class DeclaredRefusal(SyntheticDataModule):
    """Declares that it does not resume on another world size, and refuses with ElasticResumeRefused."""

    supports_elastic_resume = False


class OwnRefusal(SyntheticDataModule):
    """Declares that it does not resume on another world size and refuses in its own load_state_dict with its own
    RuntimeError (production code that does not import a test kit)."""

    supports_elastic_resume = False

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved, current = state_dict["data_parallel_size"], resolve_data_parallel(self.trainer)[1]
        if saved != current:
            raise RuntimeError(f"checkpoint of {saved} data-parallel ranks cannot resume on {current}")
        super().load_state_dict(state_dict)


class CountsDrawnSamples(SyntheticDataModule):
    """Counts consumed samples in its dataset's __getitem__: loader workers count in their own processes."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.train_set = CountingTokens(self.train_set)

    @property
    def consumed_samples(self) -> int:
        if self._loaded_consumed_samples is not None:
            return self._loaded_consumed_samples
        drawn = self.train_set.drawn // self.global_batch_size * self.global_batch_size  # one prefetched micro-batch
        return self._loader_consumed_samples + drawn


class CountingTokens(SyntheticTokens):
    def __init__(self, tokens: SyntheticTokens) -> None:
        super().__init__(tokens.num_samples, tokens.seq_len, tokens.vocab_size, tokens.seed)
        self.drawn = 0

    def __getitem__(self, index: int) -> dict[str, Any]:
        self.drawn += 1
        return super().__getitem__(index)


def _suite(name: str, datamodule_class: type) -> type[unittest.TestCase]:
    return type(name, (DataModuleResumeConformance, unittest.TestCase), {
        "__module__": __name__, "__qualname__": name,
        "make_datamodule": classmethod(lambda cls: datamodule_class(num_val=12))})


Unrelated = _suite("Unrelated", ShardServerDownOnTwoRanks)
Undeclared = _suite("Undeclared", UndeclaredButRefusing)
DrawCounting = _suite("DrawCounting", CountsDrawnSamples)
Refusing = _suite("Refusing", DeclaredRefusal)
OwnRefusing = _suite("OwnRefusing", OwnRefusal)
Correct = _suite("Correct", SyntheticDataModule)
