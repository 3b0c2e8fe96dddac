"""An outside author's Hugging Face Trainer recipe: a tiny BERT pre-trained as a masked LM, in two masking variants.

The model is ``BertForMaskedLM`` built from a ``BertConfig`` (hidden 32, 2 layers, dropout 0.1). The tokenizer is a
``PreTrainedTokenizerFast`` around an in-memory ``tokenizers`` WordLevel vocabulary (no download); the corpus is
synthetic sentences of that vocabulary, tokenized once, of 6 to 14 words, so batches are padded. AdamW with a linear
warmup and decay, two micro-batches of 4 per optimizer step (a 40-sample epoch is 5 steps), evaluation every 2
steps, ``transformers.set_seed`` before the model is built.

``masking="collate"``   what ``run_mlm.py`` does: ``DataCollatorForLanguageModeling`` (mlm_probability 0.15, no
                        ``seed``) draws the masks from torch's global RNG when a batch is collated.
``masking="sample"``    each sample's mask is a function of (seed, sample index), drawn from a generator of its own
                        in ``__getitem__`` (static masking, as BERT's original pre-processing); the collator only pads.

Run as a script, the module trains with the Trainer alone (nothing of the kit is imported), so that a resume can be
compared with an uninterrupted run without the kit::

    python tests/outside_hf_trainer.py --output-dir D --max-steps N [--stop-after K] [--resume D/checkpoint-K]
        --record R.pt [--masking collate|sample]

Imported as a module, it also defines the conformance classes (below, under ``if __name__ != "__main__":``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from torch.utils.data import Dataset
from transformers import (
    BertConfig,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    DataCollatorForTokenClassification,
    PreTrainedTokenizerFast,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
WORDS = tuple(f"w{index}" for index in range(59))
MLM_PROBABILITY = 0.15
TRAIN_SAMPLES, EVAL_SAMPLES = 40, 12
MASKINGS = ("collate", "sample")


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A whitespace WordLevel tokenizer of 64 tokens that wraps every sentence in [CLS] ... [SEP]."""
    vocabulary = {token: index for index, token in enumerate(SPECIAL_TOKENS + WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocabulary["[CLS]"]), ("[SEP]", vocabulary["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=16)


def synthetic_sentences(count: int, seed: int) -> list[str]:
    """``count`` sentences of 6 to 14 words; word ``i + 1`` mostly follows word ``i``, so there is something to learn."""
    generator = torch.Generator().manual_seed(seed)
    sentences = []
    for _ in range(count):
        length = int(torch.randint(6, 15, (1,), generator=generator))
        start = int(torch.randint(0, len(WORDS), (1,), generator=generator))
        jumps = torch.randint(0, 4, (length,), generator=generator).tolist()
        position, words = start, []
        for jump in jumps:
            words.append(WORDS[position % len(WORDS)])
            position += 1 if jump else 7
        sentences.append(" ".join(words))
    return sentences


class TokenizedSentences(Dataset):
    """Sentences tokenized up front, as ``run_mlm.py`` does (with the special-tokens mask the collator reads)."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, count: int, seed: int) -> None:
        encoded = tokenizer(synthetic_sentences(count, seed), return_special_tokens_mask=True)
        self.input_ids, self.special_tokens_mask = encoded["input_ids"], encoded["special_tokens_mask"]

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return {"input_ids": self.input_ids[index], "special_tokens_mask": self.special_tokens_mask[index]}


class PerSampleMaskedSentences(TokenizedSentences):
    """The same sentences, each masked by a generator seeded from (``mask_seed``, index): 15% of the non-special
    tokens become labels; of those 80% are replaced by [MASK], 10% by a random word, 10% kept."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, count: int, seed: int, mask_seed: int) -> None:
        super().__init__(tokenizer, count, seed)
        self.mask_seed, self.mask_id, self.vocab_size = mask_seed, tokenizer.mask_token_id, len(tokenizer)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        generator = torch.Generator().manual_seed(self.mask_seed * 1_000_003 + index)
        input_ids = torch.tensor(self.input_ids[index])
        special = torch.tensor(self.special_tokens_mask[index], dtype=torch.bool)
        chosen = (torch.rand(input_ids.shape, generator=generator) < MLM_PROBABILITY) & ~special
        draw = torch.rand(input_ids.shape, generator=generator)
        random_words = torch.randint(len(SPECIAL_TOKENS), self.vocab_size, input_ids.shape, generator=generator)
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
        masked = torch.where(chosen & (draw < 0.8), torch.full_like(input_ids, self.mask_id), input_ids)
        masked = torch.where(chosen & (draw >= 0.8) & (draw < 0.9), random_words, masked)
        return {"input_ids": masked.tolist(), "labels": labels.tolist()}


def make_model(tokenizer: PreTrainedTokenizerFast) -> BertForMaskedLM:
    """A 2-layer BERT, hidden 32, dropout 0.1 (hidden and attention), tied MLM head."""
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=16, hidden_dropout_prob=0.1,
                        attention_probs_dropout_prob=0.1, pad_token_id=tokenizer.pad_token_id)
    return BertForMaskedLM(config)


def make_arguments(output_dir: str, max_steps: int, **overrides: Any) -> TrainingArguments:
    settings: dict[str, Any] = {
        "per_device_train_batch_size": 4, "per_device_eval_batch_size": 6, "gradient_accumulation_steps": 2,
        "learning_rate": 2e-3, "weight_decay": 0.01, "warmup_steps": 3, "lr_scheduler_type": "linear",
        "adam_beta2": 0.98, "max_grad_norm": 1.0, "seed": 1234, "eval_strategy": "steps", "eval_steps": 2,
        "save_strategy": "no", "logging_steps": 1, "report_to": "none", "use_cpu": True, "disable_tqdm": True,
        "dataloader_num_workers": 0}
    settings.update(overrides)
    return TrainingArguments(output_dir=output_dir, max_steps=max_steps, **settings)


def make_trainer(output_dir: str, max_steps: int, masking: str = "collate", **overrides: Any) -> Trainer:
    """A Trainer of a freshly built BERT over the synthetic train and evaluation sentences."""
    if masking not in MASKINGS:
        raise ValueError(f"masking must be one of {MASKINGS}, got {masking!r}")
    arguments = make_arguments(output_dir, max_steps, **overrides)
    tokenizer = build_tokenizer()
    if masking == "collate":
        train = TokenizedSentences(tokenizer, TRAIN_SAMPLES, seed=11)
        evaluation = TokenizedSentences(tokenizer, EVAL_SAMPLES, seed=12)
        collator: Any = DataCollatorForLanguageModeling(tokenizer, mlm_probability=MLM_PROBABILITY)
    else:
        train = PerSampleMaskedSentences(tokenizer, TRAIN_SAMPLES, seed=11, mask_seed=arguments.seed)
        evaluation = PerSampleMaskedSentences(tokenizer, EVAL_SAMPLES, seed=12, mask_seed=arguments.seed + 1)
        collator = DataCollatorForTokenClassification(tokenizer)  # pads input_ids and labels (with -100)
    set_seed(arguments.seed)
    return Trainer(model=make_model(tokenizer), args=arguments, data_collator=collator, train_dataset=train,
                   eval_dataset=evaluation, processing_class=tokenizer)


# ---------------------------------------------------------------------------------------------------------------------
# script mode: the Trainer alone
# ---------------------------------------------------------------------------------------------------------------------

class LossLog(TrainerCallback):
    """Every logged training and evaluation loss by global step; asks to stop once ``stop_after`` is reached (the
    step's save, from save_steps, happens before the loop acts on the stop)."""

    def __init__(self, stop_after: int | None) -> None:
        self.stop_after = stop_after
        self.train: dict[int, float] = {}
        self.evaluation: dict[int, float] = {}

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        if "loss" in logs:
            self.train[state.global_step] = logs["loss"]
        if "eval_loss" in logs:
            self.evaluation[state.global_step] = logs["eval_loss"]

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.stop_after is not None and state.global_step >= self.stop_after:
            control.should_training_stop = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the tiny masked-LM BERT with the Hugging Face Trainer alone")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--max-steps", type=int, required=True)
    parser.add_argument("--stop-after", type=int, help="save checkpoint-K after step K and stop there")
    parser.add_argument("--resume", help="a checkpoint-K folder to resume from")
    parser.add_argument("--record", type=Path, required=True, help="torch.save losses and final weights here")
    parser.add_argument("--masking", choices=MASKINGS, default="collate")
    options = parser.parse_args(argv)
    saving = {} if options.stop_after is None else {"save_strategy": "steps", "save_steps": options.stop_after}
    trainer = make_trainer(options.output_dir, options.max_steps, options.masking, **saving)
    log = LossLog(options.stop_after)
    trainer.add_callback(log)
    trainer.train(resume_from_checkpoint=options.resume)
    weights = {name: tensor.detach().clone() for name, tensor in trainer.model.state_dict().items()}
    torch.save({"losses": log.train, "eval_losses": log.evaluation, "weights": weights}, options.record)
    return 0


if __name__ != "__main__":
    import unittest

    from conformance import StopAndGoConformance

    class BertMLMRecipe:
        """The recipe's Trainer under the kit: 10 steps, checkpoint and interruption after step 4."""

        num_steps = 10
        stop_step = 4
        masking: str

        @classmethod
        def make_trainer(cls, output_dir: str, max_steps: int) -> Trainer:
            return make_trainer(output_dir, max_steps, masking=cls.masking)

    class TestBertMLMCollateMaskingStopAndGo(BertMLMRecipe, StopAndGoConformance, unittest.TestCase):
        """run_mlm.py's masking: DataCollatorForLanguageModeling draws from the global RNG at collate time."""

        masking = "collate"

    class TestBertMLMSampleMaskingStopAndGo(BertMLMRecipe, StopAndGoConformance, unittest.TestCase):
        """Masks derived from (seed, sample index) in the dataset; the collator only pads."""

        masking = "sample"


if __name__ == "__main__":
    raise SystemExit(main())
