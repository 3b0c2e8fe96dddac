"""Synthetic token data (nothing downloaded) and a resumable data module for the reference models."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from conformance import ResumableDataModule


class SyntheticTokens(Dataset):
    """Deterministic learnable sequences: sample ``i`` is an arithmetic progression modulo ``vocab_size - 1``.

    Start and stride come from a generator seeded by ``(seed, i)``, so a sample never depends on access order.
    The last vocabulary id is never produced (BERT uses it as the mask token).
    """

    def __init__(self, num_samples: int, seq_len: int, vocab_size: int, seed: int) -> None:
        self.num_samples = num_samples
        self.seq_len = seq_len
        self.vocab_size = vocab_size
        self.seed = seed

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} outside [0, {self.num_samples})")
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        start, stride = torch.randint(0, self.vocab_size - 1, (2,), generator=generator).tolist()
        tokens = (start + (stride + 1) * torch.arange(self.seq_len)) % (self.vocab_size - 1)
        return {"idx": index, "tokens": tokens}


class SyntheticDataModule(ResumableDataModule, pl.LightningDataModule):
    """Train/validation splits of :class:`SyntheticTokens` with consumed-samples resume.

    Training is shuffled per epoch and drops a partial last global batch; validation always starts at sample 0.
    """

    def __init__(self, *, num_train: int = 44, num_val: int = 8, seq_len: int = 16, vocab_size: int = 64,
                 micro_batch_size: int = 4, global_batch_size: int = 8, shuffle: bool = True, seed: int = 7,
                 num_workers: int = 0) -> None:
        super().__init__()
        self.micro_batch_size = micro_batch_size
        self.global_batch_size = global_batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_workers = num_workers
        self.train_set = SyntheticTokens(num_train, seq_len, vocab_size, seed)
        self.val_set = SyntheticTokens(num_val, seq_len, vocab_size, seed + 1)

    @property
    def accumulate_grad_batches(self) -> int:
        """Micro-batches per optimizer step on one rank (pass it to the Trainer)."""
        return self.global_batch_size // self.micro_batch_size

    def train_dataloader(self) -> DataLoader:
        return self.resumable_train_dataloader(
            self.train_set, shuffle=self.shuffle, seed=self.seed, num_workers=self.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        return self.resumable_eval_dataloader(self.val_set, num_workers=self.num_workers)
