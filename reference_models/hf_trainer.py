"""The reference recipe of the Hugging Face Trainer backend, as a Trainer user writes it: a 2-layer GPT-2 built from
a config (dropout 0.1, no download), synthetic token sequences, AdamW with a linear warmup and cosine decay, two
micro-batches per optimizer step, and the Trainer's own checkpoints (``resume_from_checkpoint``).

The kit calls :meth:`GPT2TrainerRecipe.make_trainer`; run as a script, the module trains with the Trainer alone, so
that a resume can be proven exact without the kit (``tests/test_hf_trainer_ground_truth.py``)::

    python -m reference_models.hf_trainer --output-dir D --max-steps 10 [--stop-after 4] [--resume D/checkpoint-4]
        --record R.pt [--ignore-data-skip]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments, set_seed

__all__ = ["GPT2TrainerRecipe", "SyntheticSequences", "make_trainer"]

VOCAB_SIZE, SEQ_LEN = 96, 16


class SyntheticSequences(Dataset):
    """``size`` token sequences drawn from their own generator; each sample is a dict the GPT-2 head trains on."""

    def __init__(self, size: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.tokens = torch.randint(0, VOCAB_SIZE, (size, SEQ_LEN), generator=generator)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokens[index], "labels": self.tokens[index]}


def make_model() -> GPT2LMHeadModel:
    """A 2-layer, 32-wide GPT-2 with dropout 0.1 everywhere (about 60k parameters)."""
    config = GPT2Config(vocab_size=VOCAB_SIZE, n_positions=SEQ_LEN, n_embd=32, n_layer=2, n_head=2,
                        resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1, use_cache=False)
    return GPT2LMHeadModel(config)


def make_arguments(output_dir: str, max_steps: int, **overrides: Any) -> TrainingArguments:
    """The run's TrainingArguments: 4 samples per micro-batch, 2 micro-batches per step (a 64-sample epoch is 8
    steps), CPU, quiet."""
    defaults: dict[str, Any] = {
        "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8, "gradient_accumulation_steps": 2,
        "learning_rate": 3e-3, "weight_decay": 0.01, "warmup_steps": 2, "lr_scheduler_type": "cosine",
        "max_grad_norm": 1.0, "seed": 17, "save_strategy": "no", "eval_strategy": "no", "logging_steps": 1,
        "report_to": "none", "use_cpu": True, "disable_tqdm": True, "dataloader_num_workers": 0}
    return TrainingArguments(output_dir=output_dir, max_steps=max_steps, **{**defaults, **overrides})


def make_trainer(output_dir: str, max_steps: int, **overrides: Any) -> Trainer:
    """A Trainer of a fresh model over the synthetic train and evaluation sets, seeded before the model is built (as
    the Trainer's example scripts do: the Trainer itself seeds only once the model exists)."""
    arguments = make_arguments(output_dir, max_steps, **overrides)
    set_seed(arguments.seed)
    return Trainer(model=make_model(), args=arguments, train_dataset=SyntheticSequences(64, seed=3),
                   eval_dataset=SyntheticSequences(16, seed=4))


class GPT2TrainerRecipe:
    """The recipe's hook for :class:`conformance.StopAndGoConformance`; list it before the mixin."""

    @classmethod
    def make_trainer(cls, output_dir: str, max_steps: int) -> Trainer:
        return make_trainer(output_dir, max_steps)


# ---------------------------------------------------------------------------------------------------------------------
# script mode: the Trainer alone, for the proof without the kit
# ---------------------------------------------------------------------------------------------------------------------

class _Record(TrainerCallback):
    """Keeps every logged training loss by step; stops training after ``stop_after`` (the save comes first)."""

    def __init__(self, stop_after: int | None) -> None:
        self.stop_after, self.losses = stop_after, {}

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.losses[state.global_step] = logs["loss"]

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.stop_after:
            control.should_training_stop = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the reference GPT-2 with the Hugging Face Trainer alone")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--max-steps", type=int, required=True)
    parser.add_argument("--stop-after", type=int, default=None, help="save a checkpoint after this step and stop")
    parser.add_argument("--resume", default=None, help="a checkpoint-N folder to resume from")
    parser.add_argument("--record", type=Path, required=True, help="torch.save the losses and final weights here")
    parser.add_argument("--ignore-data-skip", action="store_true",
                        help="resume at the epoch's first batch (a negative control of the proof)")
    args = parser.parse_args(argv)
    saving = {} if args.stop_after is None else {"save_strategy": "steps", "save_steps": args.stop_after}
    trainer = make_trainer(args.output_dir, args.max_steps, ignore_data_skip=args.ignore_data_skip, **saving)
    record = _Record(args.stop_after)
    trainer.add_callback(record)
    trainer.train(resume_from_checkpoint=args.resume)
    torch.save({"losses": record.losses, "weights": trainer.model.state_dict()}, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
