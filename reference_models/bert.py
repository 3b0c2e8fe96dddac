"""A tiny BERT (masked language model): bidirectional blocks, random masking drawn fresh at every training step."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from reference_models.language_model import LanguageModelModule
from reference_models.transformer import Transformer, TransformerConfig


class TinyBERT(LanguageModelModule):
    """Masked LM: hides ``mask_probability`` of the tokens behind the last vocabulary id and predicts them.

    Training masks come from the global torch RNG (so a resumed run must restore it); validation masks are a
    function of each sample's index, so validation is deterministic and comparable between runs.
    """

    def __init__(self, config: TransformerConfig | None = None, mask_probability: float = 0.25,
                 **optim: float) -> None:
        super().__init__(**optim)
        config = config or TransformerConfig()
        self.config = config
        self.mask_probability = mask_probability
        self.mask_id = config.vocab_size - 1
        self.transformer = Transformer(config, causal=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.transformer(tokens)

    def loss(self, batch: dict[str, torch.Tensor], *, training: bool) -> torch.Tensor:
        tokens = batch["tokens"]
        mask = self.training_mask(tokens) if training else self.validation_mask(batch["idx"], tokens)
        logits = self(tokens.masked_fill(mask, self.mask_id))
        return F.cross_entropy(logits[mask], tokens[mask])

    def training_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        return random_token_mask(tokens, self.mask_probability)

    def validation_mask(self, indices: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return per_sample_token_mask(indices, tokens, self.mask_probability)


def random_token_mask(tokens: torch.Tensor, probability: float) -> torch.Tensor:
    """A fresh random mask from the global RNG, with at least one masked token per sequence."""
    mask = torch.rand(tokens.shape, device=tokens.device) < probability
    mask[:, 0] |= ~mask.any(dim=1)
    return mask


def per_sample_token_mask(indices: torch.Tensor, tokens: torch.Tensor, probability: float) -> torch.Tensor:
    """The same mask for a sample every time: drawn from a generator seeded by the sample's index."""
    rows = [torch.rand(tokens.shape[1], generator=torch.Generator().manual_seed(index)) < probability
            for index in indices.tolist()]
    mask = torch.stack(rows).to(tokens.device)
    mask[:, 0] |= ~mask.any(dim=1)
    return mask
