"""A tiny Megatron-core BERT (``BertModel``) as a Lightning module, tensor-parallel on CPU over gloo: masked
language modelling with random masks drawn fresh every training step, as :class:`reference_models.bert.TinyBERT`.

``BertModel`` chooses its attention-mask layout by the core attention of its spec, and asks Transformer Engine's
version for anything but Megatron's own ``DotProductAttention`` (which fails without TE). So the model is built
with the stock local spec and its core attention is then replaced, layer by layer, with the CPU one.
"""

from __future__ import annotations

from typing import Any

import torch
from megatron.core.models.bert.bert_layer_specs import bert_layer_local_spec
from megatron.core.models.bert.bert_model import BertModel
from megatron.core.transformer import TransformerConfig
from megatron.core.transformer.enums import AttnMaskType

from reference_models.bert import per_sample_token_mask, random_token_mask
from reference_models.megatron_language_model import MegatronLanguageModel, SDPACoreAttention


class MegatronBERT(MegatronLanguageModel):
    """Masked LM on Megatron-core's ``BertModel`` (no binary head): hides ``mask_probability`` of the tokens
    behind the last vocabulary id and predicts them; training masks come from the global torch RNG, validation
    masks from each sample's index."""

    def __init__(self, *, mask_probability: float = 0.25, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mask_probability = mask_probability
        self.mask_id = self.vocab_size - 1

    def build(self, config: TransformerConfig) -> BertModel:
        bert = BertModel(config, num_tokentypes=0, transformer_layer_spec=bert_layer_local_spec,
                         vocab_size=self.vocab_size, max_sequence_length=self.seq_len, add_binary_head=False)
        for layer in bert.encoder.layers:
            attention = layer.self_attention
            attention.core_attention = SDPACoreAttention(config, attention.layer_number, AttnMaskType.padding)
        return bert

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """This tensor-parallel rank's slice of the vocabulary logits, [batch, sequence, vocab / TP]."""
        logits, _ = self.megatron(tokens, attention_mask=torch.ones_like(tokens))
        return logits

    def loss(self, batch: dict[str, torch.Tensor], *, training: bool) -> torch.Tensor:
        tokens = batch["tokens"]
        if training:
            mask = random_token_mask(tokens, self.mask_probability)
        else:
            mask = per_sample_token_mask(batch["idx"], tokens, self.mask_probability)
        logits = self(tokens.masked_fill(mask, self.mask_id))
        return self.vocab_parallel_loss(logits[mask], tokens[mask])
