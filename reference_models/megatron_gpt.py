"""A tiny Megatron-core GPT (``GPTModel``) as a Lightning module, tensor-parallel on CPU over gloo (see
:mod:`reference_models.megatron_language_model` for what makes Megatron-core run on CPU)."""

from __future__ import annotations

import torch
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer import TransformerConfig

from reference_models.megatron_language_model import MegatronLanguageModel, SDPACoreAttention


class MegatronGPT(MegatronLanguageModel):
    """Causal LM on Megatron-core's ``GPTModel``: predicts token t+1 from tokens up to t, dropout on."""

    def build(self, config: TransformerConfig) -> GPTModel:
        spec = get_gpt_layer_local_spec()  # a new spec object per call: changing it changes no one else's
        spec.submodules.self_attention.submodules.core_attention = SDPACoreAttention
        return GPTModel(config, spec, self.vocab_size, self.seq_len, position_embedding_type="learned_absolute")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """This tensor-parallel rank's slice of the vocabulary logits, [batch, sequence, vocab / TP]."""
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        return self.megatron(tokens, positions, attention_mask=None)

    def loss(self, batch: dict[str, torch.Tensor], *, training: bool) -> torch.Tensor:
        tokens = batch["tokens"]
        return self.vocab_parallel_loss(self(tokens[:, :-1]), tokens[:, 1:])
