"""A tiny GPT trained the NeMo 2 way: ``nemo.lightning.MegatronStrategy``, ``MegatronOptimizerModule`` with a
cosine schedule, a data module on ``MegatronDataSampler`` whose ``state_dict`` keeps the consumed samples, and
``RNGStateCallback`` for the random state NeMo does not save (needs ``tox -e nemo``).

The module follows NeMo's own GPT: the Megatron-core model is built in ``configure_model`` once the strategy has
formed the parallel groups; NeMo calls ``data_step`` to draw each micro-batch, ``training_step`` per micro-batch,
and reduces the per-token losses with ``MaskedTokenLossReduction``. Attention is
:class:`~reference_models.megatron_language_model.SDPACoreAttention` (no Transformer Engine on these machines).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.optimizer import OptimizerConfig
from megatron.core.transformer import TransformerConfig
from nemo import lightning as nl
from nemo.lightning.megatron_parallel import MaskedTokenLossReduction
from nemo.lightning.pytorch.optim import CosineAnnealingScheduler, MegatronOptimizerModule

from conformance import RNGStateCallback
from reference_models.megatron_language_model import SDPACoreAttention
from reference_models.nemo_data import NeMoSamplerDataModule


class NeMoGPT(pl.LightningModule):
    """Causal LM on Megatron-core's ``GPTModel``, shaped the way NeMo's strategy drives a model; dropout on."""

    def __init__(self, *, vocab_size: int = 64, seq_len: int = 16, hidden_size: int = 32, num_layers: int = 2,
                 num_heads: int = 4, dropout: float = 0.1, lr: float = 1e-3) -> None:
        super().__init__()
        self.vocab_size, self.seq_len = vocab_size, seq_len
        # MegatronStrategy copies its parallel sizes into this config before configure_model
        self.config = TransformerConfig(num_layers=num_layers, hidden_size=hidden_size, num_attention_heads=num_heads,
                                        hidden_dropout=dropout, attention_dropout=dropout,
                                        use_cpu_initialization=True)
        self.optim = MegatronOptimizerModule(
            OptimizerConfig(optimizer="adam", lr=lr, weight_decay=0.01, clip_grad=1.0,
                            use_distributed_optimizer=False),
            lr_scheduler=CosineAnnealingScheduler(warmup_steps=2, constant_steps=0, min_lr=lr / 10),
        )
        self.optim.connect(self)  # gives this module configure_optimizers
        self._train_reduction = MaskedTokenLossReduction()
        self._validation_reduction = MaskedTokenLossReduction(validation_step=True)

    def configure_model(self) -> None:
        if hasattr(self, "module"):
            return
        spec = get_gpt_layer_local_spec()
        spec.submodules.self_attention.submodules.core_attention = SDPACoreAttention
        self.module = GPTModel(self.config, spec, self.vocab_size, self.seq_len,
                               pre_process=parallel_state.is_pipeline_first_stage(),
                               post_process=parallel_state.is_pipeline_last_stage(),
                               position_embedding_type="learned_absolute")

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The per-token loss [batch, sequence] of predicting ``labels`` from ``tokens``."""
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        return self.module(tokens, positions, attention_mask=None, labels=labels)

    def data_step(self, dataloader_iter: Iterator[Any]) -> dict[str, torch.Tensor]:
        batch = next(dataloader_iter)
        if isinstance(batch, tuple):  # NeMo's fetcher yields (batch, batch_idx, dataloader_idx)
            batch = batch[0]
        tokens = batch["tokens"]
        return {"idx": batch["idx"], "tokens": tokens[:, :-1], "labels": tokens[:, 1:],
                "loss_mask": torch.ones(tokens[:, 1:].shape)}

    def forward_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self(batch["tokens"], batch["labels"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int | None = None) -> torch.Tensor:
        return self.forward_step(batch)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int | None = None) -> torch.Tensor:
        return self.forward_step(batch)

    @property
    def training_loss_reduction(self) -> MaskedTokenLossReduction:
        return self._train_reduction

    @property
    def validation_loss_reduction(self) -> MaskedTokenLossReduction:
        return self._validation_reduction


class NeMoGPTRecipe:
    """The NeMo GPT on ``tensor_parallel_size`` ranks: 2 micro-batches of 2 per optimizer step, 64 training
    samples (16 steps per epoch), validation every 2 steps."""

    tensor_parallel_size: ClassVar[int] = 1
    num_steps: ClassVar[int] = 6
    stop_step: ClassVar[int] = 3
    validate_every_n_steps: ClassVar[int | None] = 2

    @classmethod
    def make_model(cls) -> pl.LightningModule:
        return NeMoGPT()

    @classmethod
    def make_datamodule(cls) -> pl.LightningDataModule:
        return NeMoSamplerDataModule(micro_batch_size=2, global_batch_size=4, train_samples=64)

    @classmethod
    def make_callbacks(cls) -> list[pl.Callback]:
        return [RNGStateCallback()]

    @classmethod
    def trainer_kwargs(cls) -> dict[str, Any]:
        strategy = nl.MegatronStrategy(tensor_model_parallel_size=cls.tensor_parallel_size,
                                       ckpt_async_save=False, ckpt_parallel_save=False,
                                       ckpt_load_strictness="raise_all")
        return {"devices": cls.tensor_parallel_size, "strategy": strategy, "use_distributed_sampler": False,
                "limit_val_batches": 2,
                "log_every_n_steps": 1}
