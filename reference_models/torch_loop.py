"""The reference recipes of the loop backend: the tiny GPT trained by the kit's own PyTorch loop, with torchdata's
``StatefulDataLoader``, AdamW and a warmup-cosine schedule, gradient accumulation inside ``train_step``, its RNG
stream in :class:`conformance.LoopRNGState`, checkpointed by ``torch.distributed.checkpoint`` (the kit's default).

On several ranks the model is wrapped in ``DistributedDataParallel`` and each rank reads its own shard through a
``DistributedSampler`` reshuffled per epoch (``start_epoch``); the loader's per-rank position resumes through its
own state. List the mixin before :class:`conformance.StopAndGoConformance`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from conformance import LoopRNGState, TrainingState
from conformance.runs.loop.state import rank_and_world_size
from reference_models.data import SyntheticTokens
from reference_models.language_model import WarmupCosine
from reference_models.transformer import Transformer, TransformerConfig

__all__ = ["GPTLoopRecipe", "language_model_loss"]


def language_model_loss(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of ``model`` on ``tokens``."""
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


class GPTLoopRecipe:
    """Tiny GPT, 44 training sequences in batches of 8 over all ranks (5 steps per epoch), 2 micro-batches per step,
    validation on 8 sequences."""

    micro_batches: ClassVar[int] = 2
    global_batch_size: ClassVar[int] = 8
    config: ClassVar[TransformerConfig] = TransformerConfig()

    @classmethod
    def make_training_state(cls) -> TrainingState:
        rank, world_size = rank_and_world_size()
        model: torch.nn.Module = Transformer(cls.config, causal=True)
        if world_size > 1:
            model = DistributedDataParallel(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(3, 16, 0.1))
        return TrainingState(model=model, optimizers=[optimizer], lr_schedulers=[scheduler],
                             train_loader=cls.make_train_loader(rank, world_size),
                             val_loader=DataLoader(SyntheticTokens(8, 16, 64, seed=8), batch_size=4),
                             stateful=cls.make_stateful())

    @classmethod
    def make_train_loader(cls, rank: int, world_size: int) -> Any:
        dataset = SyntheticTokens(44, cls.config.seq_len, cls.config.vocab_size, seed=7)
        per_rank = cls.global_batch_size // world_size
        if world_size == 1:
            return StatefulDataLoader(dataset, batch_size=per_rank, shuffle=True, drop_last=True)
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=11,
                                     drop_last=True)
        return StatefulDataLoader(dataset, batch_size=per_rank, sampler=sampler, drop_last=True)

    @classmethod
    def make_stateful(cls) -> dict[str, Any]:
        return {"rng": LoopRNGState()}

    @classmethod
    def start_epoch(cls, state: TrainingState, epoch: int) -> None:
        sampler = getattr(state.train_loader, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)

    @classmethod
    def train_step(cls, state: TrainingState, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        total = torch.zeros(())
        for tokens in batch["tokens"].chunk(cls.micro_batches):
            loss = language_model_loss(state.model, tokens) / cls.micro_batches
            loss.backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), 1.0)
        for optimizer in state.optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        for scheduler in state.lr_schedulers:
            scheduler.step()
        return total

    @classmethod
    def validation_step(cls, state: TrainingState, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return language_model_loss(state.model, batch["tokens"])
