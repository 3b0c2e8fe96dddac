"""The model of a data-module probe run and what it saw: a model that trains nothing and records the sample ids of
every batch it is given (:mod:`conformance.runs.lightning.probe` drives it; :mod:`conformance.runs.nemo.probe` shapes it for
NeMo's strategy)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from typing_extensions import override

from conformance.runs.data_probe import ProbeLog

__all__ = ["SampleProbe"]


class SampleProbe(pl.LightningModule):
    """A model that trains nothing and records the sample ids of every batch it is given."""

    def __init__(self, sample_ids: Callable[[Any], list[int]], log: ProbeLog) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.sample_ids = sample_ids
        self.probe_log = log

    @override
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.probe_log.train.append((self.trainer.global_step, self.trainer.current_epoch, self.sample_ids(batch)))
        return self.weight * 0.0

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.probe_log.valid.append((self.trainer.global_step, batch_idx, self.sample_ids(batch)))

    @override
    def on_train_start(self) -> None:
        datamodule = self.trainer.datamodule
        self.probe_log.start_state = dict(datamodule.state_dict()) if datamodule is not None else None

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)
