"""Prediction writers as outside authors write them, from the README's writer contract alone, and their conformance
classes (at module level: the two-rank and memory runs import them by name in fresh processes). Not collected:
tests reach the classes through this module."""

from __future__ import annotations

import os
import unittest
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from conformance import PredictionReadError, PredictionSet, PredictionWriterConformance, write_rank_manifest
from reference_models.gpt import TinyGPT
from reference_models.prediction_data import PredictionDataModule
from reference_models.recipes import PredictionRecipe


class TorchSaveWriter(BasePredictionWriter):
    """One torch.save file per batch under the kit's names, with sample_ids and batch_idx, and a rank manifest."""

    supports_resume = False  # a re-run starts over

    def __init__(self, output_dir: Path) -> None:
        super().__init__("batch")
        self.output_dir = Path(output_dir)

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        rank = trainer.global_rank
        name = f"predictions__rank_{rank}__dp_rank_{rank}__batch_{batch_idx}.pt"
        content = {**prediction, "sample_ids": prediction["idx"].to(torch.int64), "batch_idx": torch.tensor(batch_idx)}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        partial = self.output_dir / f".{name}.partial"
        torch.save(content, partial)
        os.replace(partial, self.output_dir / name)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loaders = trainer.predict_dataloaders
        loaders = loaders if isinstance(loaders, list) else [loaders]
        write_rank_manifest(self.output_dir, global_rank=trainer.global_rank, dp_rank=trainer.global_rank,
                            dp_size=trainer.world_size,
                            dataloaders={index: {"num_samples": len(loader.dataset)} for index, loader in
                                         enumerate(loaders)})


class NumpyArchiveWriter(BasePredictionWriter):
    """A format of its own: one .npz per batch and rank (logits and ids), read back by its own function."""

    supports_resume = False  # a re-run predicts everything again

    def __init__(self, output_dir: Path) -> None:
        super().__init__("batch")
        self.output_dir = Path(output_dir)

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"rank{trainer.global_rank}-batch{batch_idx:05d}.npz"
        with open(path.with_suffix(".tmp"), "wb") as stream:
            np.savez(stream, idx=prediction["idx"].numpy(), logits=prediction["logits"].numpy())
        os.replace(path.with_suffix(".tmp"), path)


class UndeclaredNumpyArchiveWriter(NumpyArchiveWriter):
    """The same writer, without saying that it does not resume."""

    supports_resume = None


def read_numpy_archives(folder: Path, *, allow_incomplete: bool = False) -> PredictionSet:
    """The author's reader: rows in sample-id order, logits padded with 0 to the longest sequence."""
    parts = []
    for path in sorted(Path(folder).glob("*.npz")):
        with np.load(path, allow_pickle=False) as archive:
            parts.append((torch.from_numpy(archive["idx"]), torch.from_numpy(archive["logits"])))
    if not parts:
        raise PredictionReadError(f"{folder} holds no .npz predictions")
    length = max(logits.shape[1] for _, logits in parts)
    ids = torch.cat([ids for ids, _ in parts])
    logits = torch.cat([torch.nn.functional.pad(part, (0, 0, 0, length - part.shape[1])) for _, part in parts])
    order = torch.argsort(ids)
    unique = torch.unique(ids)
    return PredictionSet(unique, {"idx": unique, "logits": logits[order][: len(unique)]}, 0, len(unique) == len(ids))


class TestTorchSaveWriter(PredictionRecipe, PredictionWriterConformance, unittest.TestCase):
    @classmethod
    def make_writer(cls, output_dir: Path) -> TorchSaveWriter:
        return TorchSaveWriter(output_dir)


class TestNumpyArchiveWriter(PredictionRecipe, PredictionWriterConformance, unittest.TestCase):
    @classmethod
    def make_writer(cls, output_dir: Path) -> NumpyArchiveWriter:
        return NumpyArchiveWriter(output_dir)

    @classmethod
    def read_predictions(cls, folder: Path, *, allow_incomplete: bool = False) -> PredictionSet:
        return read_numpy_archives(folder, allow_incomplete=allow_incomplete)


class TestUndeclaredNumpyArchiveWriter(TestNumpyArchiveWriter):
    @classmethod
    def make_writer(cls, output_dir: Path) -> NumpyArchiveWriter:
        return UndeclaredNumpyArchiveWriter(output_dir)


class BufferingTorchSaveWriter(TorchSaveWriter):
    """Holds every batch's prediction until the end of the job, then saves them (a writer that leaks)."""

    def __init__(self, output_dir: Path) -> None:
        super().__init__(output_dir)
        self.pending: list[tuple[Any, int]] = []

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        self.pending.append((prediction, batch_idx))

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for prediction, batch_idx in self.pending:
            super().write_on_batch_end(trainer, pl_module, prediction, None, None, batch_idx, 0)
        super().on_predict_end(trainer, pl_module)


class TestTorchSaveWriterOnDefaultData(PredictionWriterConformance, unittest.TestCase):
    """The torch.save writer certified on the recipe's one data module, with no make_memory_datamodule()."""

    @classmethod
    def make_model(cls) -> pl.LightningModule:
        return TinyGPT()

    @classmethod
    def make_datamodule(cls) -> pl.LightningDataModule:
        return PredictionDataModule(ragged=True)

    @classmethod
    def make_writer(cls, output_dir: Path) -> TorchSaveWriter:
        return TorchSaveWriter(output_dir)


class TestBufferingWriterOnDefaultData(TestTorchSaveWriterOnDefaultData):
    @classmethod
    def make_writer(cls, output_dir: Path) -> TorchSaveWriter:
        return BufferingTorchSaveWriter(output_dir)


class StreamedTokens(torch.utils.data.IterableDataset):
    """The synthetic sequences as a stream, as a data pipeline serves them: no indexing (a length, which the
    writer's manifest reads)."""

    def __init__(self, tokens: torch.utils.data.Dataset, count: int) -> None:
        self.tokens, self.count = tokens, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Any:
        return (self.tokens[index] for index in range(self.count))


class StreamedPredictionData(PredictionDataModule):
    def predict_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(StreamedTokens(self.dataset, 45), batch_size=self.batch_size)


class TestTorchSaveWriterOnStreamedData(TestTorchSaveWriterOnDefaultData):
    """The torch.save writer on a predict loader over an IterableDataset, with no make_memory_datamodule()."""

    @classmethod
    def make_datamodule(cls) -> pl.LightningDataModule:
        return StreamedPredictionData()
