"""Shared by the prediction writer and reader tests: a TinyGPT to probe, data modules, and a quiet predict run."""

from __future__ import annotations

import logging
import tempfile
import unittest
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from conformance import read_predictions
from conformance.predictions.collate import CollationDims, collate, flatten_prediction, take_rows
from reference_models.gpt import TinyGPT
from reference_models.prediction_data import PredictionDataModule, pad_tokens

_QUIET_WARNINGS = (".*(does not have many workers|predict returned None|shuffling enabled|across ranks is zero"
                   "|LeafSpec).*")


class ProbeGPT(TinyGPT):
    """TinyGPT that records its predict_step calls, can fail at one batch and can change what it returns."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, int]] = []
        self.fail_at: int | None = None
        self.change: Callable[[dict[str, torch.Tensor], int], Any] | None = None

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> Any:
        self.calls.append((dataloader_idx, batch_idx))
        if batch_idx == self.fail_at:
            raise RuntimeError(f"injected failure at batch {batch_idx}")
        prediction = super().predict_step(batch, batch_idx)
        return prediction if self.change is None else self.change(prediction, batch_idx)


def probe_model() -> ProbeGPT:
    """A ProbeGPT with the same weights every time, healthy and unchanged."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return ProbeGPT()


class TwoLoaders(pl.LightningDataModule):
    """Two predict dataloaders of different sizes (the second ragged)."""

    def predict_dataloader(self) -> list[DataLoader]:
        return [PredictionDataModule(num_samples=10).predict_dataloader(),
                PredictionDataModule(num_samples=7, ragged=True, seed=3).predict_dataloader()]


class ShuffledLoader(PredictionDataModule):
    """Predicts its samples in a shuffled order, so sample ids are not positions."""

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(1), collate_fn=pad_tokens)


def predict(model: ProbeGPT, writer: pl.Callback, datamodule: pl.LightningDataModule) -> Any:
    """``trainer.predict`` on one CPU device with ``writer``, without logs or Lightning's advice warnings."""
    model.calls.clear()
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, callbacks=[writer])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", _QUIET_WARNINGS)
        return trainer.predict(model, datamodule=datamodule, return_predictions=True)


def in_id_order(predictions: list[Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The sample ids (the ``idx`` key) and the collation of in-memory predictions, sorted by sample id."""
    flat = [flatten_prediction(prediction, "p")[1] for prediction in predictions if prediction is not None]
    collated = collate(flat, CollationDims())
    order = torch.argsort(collated["idx"])
    return collated["idx"][order], take_rows(collated, CollationDims(), order)


def temporary_folder(test: unittest.TestCase | type[unittest.TestCase]) -> Path:
    """A fresh folder, removed after the test (or, for a class, after its tests)."""
    folder = tempfile.TemporaryDirectory()
    (test.addClassCleanup if isinstance(test, type) else test.addCleanup)(folder.cleanup)
    return Path(folder.name)


class QuietLightning:
    """Mixin: Lightning's info logs are silenced while the test class runs."""

    @classmethod
    def setUpClass(cls) -> None:
        logger = logging.getLogger("lightning.pytorch")
        level = logger.level
        logger.setLevel(logging.ERROR)
        cls.addClassCleanup(logger.setLevel, level)
        super().setUpClass()


class PredictionTestCase(QuietLightning, unittest.TestCase):
    """Builds the model once per class."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.model = probe_model()

    def setUp(self) -> None:
        self.model.fail_at = None
        self.model.change = None
        self.folder = temporary_folder(self)

    def assert_read_equals(self, folder: Path, expected_ids: torch.Tensor, expected: Any, **read: Any) -> None:
        result = read_predictions(folder, **read)
        self.assertTrue(torch.equal(result.sample_ids, expected_ids))
        if isinstance(expected, torch.Tensor):
            self.assertTrue(torch.equal(result.predictions, expected))
            return
        self.assertEqual(set(result.predictions), set(expected))
        for key, value in expected.items():
            self.assertEqual(result.predictions[key].dtype, value.dtype, key)
            self.assertTrue(torch.equal(result.predictions[key], value), key)
