"""Prediction data for the reference models: synthetic token sequences, optionally of varying length.

The default size (45 samples in batches of 4) leaves a partial last batch and does not split evenly over two
ranks, the edge cases PredictionWriterConformance needs.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from reference_models.data import SyntheticTokens


class RaggedTokens(Dataset):
    """:class:`SyntheticTokens` cut to a length that depends on the sample: ``seq_len // 2`` up to ``seq_len``."""

    def __init__(self, tokens: SyntheticTokens) -> None:
        self.tokens = tokens

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.tokens[index]
        half = self.tokens.seq_len // 2
        return {"idx": index, "tokens": sample["tokens"][: half + index % (half + 1)]}


def pad_tokens(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Collate samples of different lengths, padding tokens with 0 to the batch's longest."""
    length = max(len(sample["tokens"]) for sample in samples)
    tokens = torch.zeros(len(samples), length, dtype=torch.int64)
    for row, sample in enumerate(samples):
        tokens[row, : len(sample["tokens"])] = sample["tokens"]
    return {"idx": torch.tensor([sample["idx"] for sample in samples]), "tokens": tokens}


class PredictionDataModule(pl.LightningDataModule):
    """``num_samples`` synthetic sequences to predict, in order, in batches of ``batch_size``."""

    def __init__(self, *, num_samples: int = 45, batch_size: int = 4, seq_len: int = 16, vocab_size: int = 64,
                 ragged: bool = False, seed: int = 11, num_workers: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        tokens = SyntheticTokens(num_samples, seq_len, vocab_size, seed)
        self.dataset = RaggedTokens(tokens) if ragged else tokens

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                          collate_fn=pad_tokens)
