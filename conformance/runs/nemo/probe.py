"""The data-module probe (:mod:`conformance.runs.lightning.probe`) shaped for NeMo's MegatronStrategy.

NeMo drives a model its own way: the strategy wraps it for Megatron-core (which reads its ``config``), draws each
micro-batch through ``data_step``, calls ``training_step`` once per micro-batch inside one Lightning batch (one
optimizer step), and reduces the losses with the model's ``training_loss_reduction``. This probe does that with
one parameter and a zero loss under Adam at a learning rate of 0, so the only thing it learns is which samples it got.
Importing this module imports NeMo and Megatron-core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from megatron.core.enums import ModelType
from megatron.core.optimizer import OptimizerConfig
from megatron.core.transformer import TransformerConfig
from megatron.core.transformer.module import MegatronModule
from nemo.lightning.megatron_parallel import MaskedTokenLossReduction
from nemo.lightning.pytorch.optim import MegatronOptimizerModule

from conformance.runs.data_probe import ProbeLog
from conformance.runs.lightning.sample_probe import SampleProbe

__all__ = ["NeMoSampleProbe"]


class _ProbeWeight(MegatronModule):
    """The probe's one parameter as the Megatron-core module NeMo's strategy wraps (Megatron's gradient buffers want
    at least one dimension; its schedules read ``model_type``)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        self.model_type = ModelType.encoder_or_decoder
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def set_input_tensor(self, input_tensor: Any) -> None:
        """Nothing to receive: the probe has one pipeline stage."""


class NeMoSampleProbe(SampleProbe):
    """A :class:`SampleProbe` that NeMo's strategy can drive: a Megatron config, NeMo's optimizer module (Adam, LR 0),
    a data step, and a zero per-sample loss reduced as NeMo reduces token losses."""

    def __init__(self, sample_ids: Callable[[Any], list[int]], log: ProbeLog) -> None:
        super().__init__(sample_ids, log)
        self.config = TransformerConfig(num_layers=1, hidden_size=8, num_attention_heads=1,
                                        use_cpu_initialization=True)
        del self.weight  # the probe's one parameter lives in the inner Megatron module NeMo wraps
        self.module = _ProbeWeight(self.config)
        # Adam at LR 0: Megatron cannot checkpoint its SGD (no state initialiser)
        self.optim = MegatronOptimizerModule(OptimizerConfig(optimizer="adam", lr=0.0, use_distributed_optimizer=False))
        self.optim.connect(self)
        self._reduction = MaskedTokenLossReduction()
        self._validation_reduction = MaskedTokenLossReduction(validation_step=True)
        self._validation_calls = 0

    def data_step(self, dataloader_iter: Iterator[Any]) -> Any:
        batch = next(dataloader_iter)
        return batch[0] if isinstance(batch, tuple) else batch  # NeMo's fetcher adds (batch_idx, dataloader_idx)

    def training_step(self, batch: Any, batch_idx: int | None = None) -> torch.Tensor:
        super().training_step(batch, 0)
        return self._zero_losses(batch, len(self.probe_log.train[-1][2]))

    def on_validation_start(self) -> None:
        self._validation_calls = 0

    def validation_step(self, batch: Any, batch_idx: int | None = None) -> torch.Tensor:
        super().validation_step(batch, self._validation_calls)  # one call per micro-batch, counted per validation
        self._validation_calls += 1
        return self._zero_losses(batch, len(self.probe_log.valid[-1][2]))

    def _zero_losses(self, batch: Any, samples: int) -> torch.Tensor:
        """A zero loss per sample ([samples, 1]), with the loss mask NeMo's reduction reads put into ``batch``."""
        batch["loss_mask"] = torch.ones(samples, 1)
        return self.module.weight.expand(samples, 1) * 0.0

    @property
    def training_loss_reduction(self) -> MaskedTokenLossReduction:
        return self._reduction

    @property
    def validation_loss_reduction(self) -> MaskedTokenLossReduction:
        return self._validation_reduction
