"""A tiny GPT (causal language model) as a Lightning module on the shared transformer."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from reference_models.language_model import LanguageModelModule
from reference_models.transformer import Transformer, TransformerConfig


class TinyGPT(LanguageModelModule):
    """Causal LM: predicts token t+1 from tokens up to t."""

    def __init__(self, config: TransformerConfig | None = None, **optim: float) -> None:
        super().__init__(**optim)
        config = config or TransformerConfig()
        self.config = config
        self.transformer = Transformer(config, causal=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.transformer(tokens)

    def loss(self, batch: dict[str, torch.Tensor], *, training: bool) -> torch.Tensor:
        tokens = batch["tokens"]
        logits = self(tokens[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
