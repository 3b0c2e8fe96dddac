"""What the Megatron-core reference models share: a CPU core attention and the Lightning plumbing of a
tensor-parallel language model (built once the strategy has formed Megatron's groups; vocabulary-parallel loss;
whole-vocabulary logits for prediction).

Megatron-core's stock layers assume CUDA in three places these models avoid: core attention is
:class:`SDPACoreAttention` (``scaled_dot_product_attention``; it draws its dropout from the model-parallel RNG
tracker, as Megatron's own attention does), weights are initialised on CPU (``use_cpu_initialization``: the full
matrix from the default generator, then this rank's shard, so every tensor-parallel size starts from the same
weights), and positions are learned (RoPE keeps its frequencies on CUDA).
"""

from __future__ import annotations

from typing import Any

import torch
from megatron.core import parallel_state, tensor_parallel
from megatron.core.transformer import TransformerConfig
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from torch.nn import functional as F

from reference_models.language_model import LanguageModelModule


class SDPACoreAttention(MegatronModule):
    """Megatron's core-attention interface on ``torch.nn.functional.scaled_dot_product_attention``: this rank's
    heads, causal or under Megatron's mask (True where attention is barred), with attention dropout drawn inside
    the tracker's tensor-parallel stream."""

    def __init__(self, config: TransformerConfig, layer_number: int, attn_mask_type: AttnMaskType,
                 attention_type: str = "self", attention_dropout: float | None = None,
                 softmax_scale: float | None = None, **_: Any) -> None:
        super().__init__(config=config)
        self.causal = attn_mask_type == AttnMaskType.causal
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout
        self.softmax_scale = softmax_scale

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: torch.Tensor | None, attn_mask_type: AttnMaskType | None = None,
                **_: Any) -> torch.Tensor:
        """[sequence, batch, heads, head dim] queries, keys and values to the [sequence, batch, hidden] context."""
        query, key, value = (tensor.permute(1, 2, 0, 3) for tensor in (query, key, value))
        allowed = None if attention_mask is None else ~attention_mask
        with tensor_parallel.get_cuda_rng_tracker().fork():
            context = F.scaled_dot_product_attention(
                query, key, value, attn_mask=allowed, is_causal=self.causal and allowed is None,
                dropout_p=self.dropout if self.training else 0.0, scale=self.softmax_scale)
        batch, heads, sequence, head_dim = context.shape
        return context.permute(2, 0, 1, 3).reshape(sequence, batch, heads * head_dim)


class MegatronLanguageModel(LanguageModelModule):
    """A Megatron-core language model in Lightning: subclasses ``build(config)`` the Megatron model and define
    ``forward(tokens)`` (this tensor-parallel rank's slice of the vocabulary logits) and ``loss``."""

    def __init__(self, *, vocab_size: int = 64, seq_len: int = 16, hidden_size: int = 32, num_layers: int = 2,
                 num_heads: int = 4, dropout: float = 0.1, **optim: float) -> None:
        super().__init__(**optim)
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.config_kwargs = {"num_layers": num_layers, "hidden_size": hidden_size, "num_attention_heads": num_heads,
                              "hidden_dropout": dropout, "attention_dropout": dropout}
        self.megatron: MegatronModule | None = None

    def build(self, config: TransformerConfig) -> MegatronModule:
        """The Megatron model for ``config`` (this rank's shard of it)."""
        raise NotImplementedError

    def configure_model(self) -> None:
        """Build the Megatron model once, in Lightning's hook that runs after the strategy set up the groups."""
        if self.megatron is not None:
            return
        if not parallel_state.model_parallel_is_initialized():
            raise RuntimeError(f"{type(self).__name__} needs Megatron's parallel groups: train it with "
                               "reference_models.tensor_parallel.TensorParallelStrategy")
        self.megatron = self.build(TransformerConfig(
            **self.config_kwargs, use_cpu_initialization=True,
            tensor_model_parallel_size=parallel_state.get_tensor_model_parallel_world_size()))

    @staticmethod
    def vocab_parallel_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross entropy of vocabulary-sharded ``logits`` (Megatron reduces over the TP ranks' slices)."""
        return tensor_parallel.vocab_parallel_cross_entropy(logits.float(), targets).mean()

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Each sample's dataset index and its logits over the whole vocabulary, gathered from every TP rank
        (with torch.distributed: Megatron's gather allocates on CUDA)."""
        logits = self(batch["tokens"]).contiguous()
        group = parallel_state.get_tensor_model_parallel_group()
        slices = [torch.empty_like(logits) for _ in range(torch.distributed.get_world_size(group))]
        torch.distributed.all_gather(slices, logits, group=group)
        return {"idx": batch["idx"], "logits": torch.cat(slices, dim=-1)}
