"""The reference recipe of the attached backend: a small trainer in the style of NeMo AutoModel's and torchtitan's
(its own config, loop, evaluation and checkpoint manager), which the kit only tells how far to train and where to
save, and watches.

The trainer saves ``step_<N>/`` folders: model and optimizer through ``torch.distributed.checkpoint`` (by parameter
name, ``get_state_dict``), and per rank a ``torch.save`` file of the scheduler, its counters, the train loader's
state and the RNG states. On resume it restores the RNG last, after the train loader's iterator exists (creating
one draws from torch's RNG). On several ranks it joins the process group the kit's launcher describes (torchelastic
variables), wraps the model in DDP and shards the data with a ``DistributedSampler``.

    python -m reference_models.attached_trainer OUT.pt [--max-steps N] [--save-at-step N] [--restore-from DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from conformance import AttachedRun, capture_rng_state, restore_rng_state
from conformance.training.rng import seed_everything
from reference_models.data import SyntheticTokens
from reference_models.language_model import WarmupCosine
from reference_models.transformer import Transformer, TransformerConfig

__all__ = ["AttachedTrainerRecipe", "TinyTrainer", "TrainerConfig"]


@dataclass
class TrainerConfig:
    """How long to train, when to save, where to resume from."""

    max_steps: int
    schedule_steps: int
    checkpoint_dir: Path
    save_at_step: int | None = None
    restore_from: Path | None = None
    seed: int = 1234
    global_batch_size: int = 8
    micro_batches: int = 2
    eval_every: int = 2


class TinyTrainer:
    """Trains the tiny GPT on 44 synthetic sequences (5 optimizer steps per epoch) with AdamW and warmup-cosine."""

    def __init__(self, config: TrainerConfig) -> None:
        self.config = config
        self.rank, self.world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("gloo")
        seed_everything(config.seed + self.rank)  # each rank its own dropout stream
        model_config = TransformerConfig()
        self.module = Transformer(model_config, causal=True)
        self.model: nn.Module = DistributedDataParallel(self.module) if self.world_size > 1 else self.module
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=3e-3, weight_decay=0.01)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           WarmupCosine(3, config.schedule_steps, 0.1))
        self.loss_fn = nn.CrossEntropyLoss()
        self.train_loader = self.make_train_loader(
            SyntheticTokens(44, model_config.seq_len, model_config.vocab_size, seed=7))
        self.val_loader = DataLoader(SyntheticTokens(8, 16, 64, seed=8), batch_size=4)
        self.step, self.epoch = 0, 0
        self.losses: dict[int, float] = {}

    def make_train_loader(self, dataset: SyntheticTokens) -> StatefulDataLoader:
        per_rank = self.config.global_batch_size // self.world_size
        if self.world_size == 1:
            return StatefulDataLoader(dataset, batch_size=per_rank, shuffle=True, drop_last=True)
        sampler = DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=11,
                                     drop_last=True)
        return StatefulDataLoader(dataset, batch_size=per_rank, sampler=sampler, drop_last=True)

    # --- the loop ------------------------------------------------------------------------------------------
    def train(self) -> None:
        rng_state = self.restore(self.latest_checkpoint()) if self.config.restore_from is not None else None
        batches = self.epoch_batches()
        if rng_state is not None:
            restore_rng_state(rng_state)  # after the iterator exists: creating it draws from torch's RNG
        while self.step < self.config.max_steps:
            batch = next(batches, None)
            if batch is None:
                self.epoch += 1
                batches = self.epoch_batches()
                continue
            self.losses[self.step + 1] = self.train_step(batch["tokens"])
            self.step += 1
            if self.step % self.config.eval_every == 0:
                self.evaluate()
            if self.step == self.config.save_at_step:
                self.save()
        if dist.is_initialized():
            dist.destroy_process_group()

    def epoch_batches(self) -> Any:
        sampler = self.train_loader.sampler
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(self.epoch)
        return iter(self.train_loader)

    def train_step(self, tokens: torch.Tensor) -> float:
        self.model.train()
        total = 0.0
        for chunk in tokens.chunk(self.config.micro_batches):
            loss = self.loss(chunk) / self.config.micro_batches
            loss.backward()
            total += loss.item()
        nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return total

    def loss(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.model(tokens[:, :-1])
        return self.loss_fn(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        losses = [self.loss(batch["tokens"]).item() for batch in self.val_loader]
        self.model.train()
        return sum(losses) / len(losses)

    # --- checkpoints ---------------------------------------------------------------------------------------
    def save(self) -> None:
        folder = self.config.checkpoint_dir / f"step_{self.step}"
        model_state, optimizer_state = get_state_dict(self.module, self.optimizer)
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(folder / "model"))
        self.write_trainer_state(folder)

    def write_trainer_state(self, folder: Path) -> None:
        torch.save(self.trainer_state(), folder / f"trainer-rank{self.rank}.pt")

    def read_trainer_state(self, folder: Path) -> dict[str, Any]:
        return torch.load(folder / f"trainer-rank{self.rank}.pt", weights_only=True)

    def trainer_state(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict(), "step": self.step, "epoch": self.epoch,
                "train_loader": self.train_loader.state_dict(), "rng": capture_rng_state()}

    def latest_checkpoint(self) -> Path:
        assert self.config.restore_from is not None
        folders = [path for path in self.config.restore_from.glob("step_*") if path.name[5:].isdigit()]
        if not folders:
            raise FileNotFoundError(f"no step_<N> checkpoint in {self.config.restore_from}")
        return max(folders, key=lambda path: int(path.name[5:]))

    def restore(self, folder: Path) -> dict[str, Any] | None:
        """Load ``folder`` into the trainer; the RNG states to set once the loop is ready (None: none saved)."""
        self.restore_model_and_optimizer(folder / "model")
        return self.load_trainer_state(self.read_trainer_state(folder))

    def restore_model_and_optimizer(self, folder: Path) -> None:
        model_state, optimizer_state = get_state_dict(self.module, self.optimizer)
        state = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(state, checkpoint_id=str(folder))
        set_state_dict(self.module, self.optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"])

    def load_trainer_state(self, saved: dict[str, Any]) -> dict[str, Any] | None:
        self.scheduler.load_state_dict(saved["scheduler"])
        self.step, self.epoch = saved["step"], saved["epoch"]
        self.train_loader.load_state_dict(saved["train_loader"])
        return saved.get("rng")


class AttachedTrainerRecipe:
    """The kit's adapter of :class:`TinyTrainer`: the trainer as it is, configured from the kit's run and watched.
    Subclasses (the mutants) swap the trainer class."""

    trainer_class: type[TinyTrainer] = TinyTrainer

    @classmethod
    def run_training(cls, run: AttachedRun) -> None:
        trainer = cls.trainer_class(TrainerConfig(max_steps=run.max_steps, schedule_steps=run.num_steps,
                                                  checkpoint_dir=run.checkpoint_dir, save_at_step=run.save_step,
                                                  restore_from=run.resume_from))
        run.watch(trainer.model, [trainer.optimizer], step=lambda: trainer.step, lr_schedulers=[trainer.scheduler],
                  loader=trainer.train_loader, epoch=lambda: trainer.epoch, loss_module=trainer.loss_fn)
        trainer.train()


def main(argv: list[str], trainer_class: type[TinyTrainer] = TinyTrainer) -> None:
    """Train ``trainer_class`` without the kit; write the per-step losses and the final weights to the output
    file."""
    parser = argparse.ArgumentParser(prog="python -m reference_models.attached_trainer")
    parser.add_argument("output")
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--schedule-steps", type=int, default=10)
    parser.add_argument("--save-at-step", type=int)
    parser.add_argument("--checkpoint-dir", type=Path)
    parser.add_argument("--restore-from", type=Path)
    args = parser.parse_args(argv)
    trainer = trainer_class(TrainerConfig(max_steps=args.max_steps, schedule_steps=args.schedule_steps,
                                        checkpoint_dir=args.checkpoint_dir or Path(args.output).parent / "checkpoints",
                                        save_at_step=args.save_at_step, restore_from=args.restore_from))
    trainer.train()
    torch.save({"losses": trainer.losses, "weights": trainer.module.state_dict()}, args.output)


if __name__ == "__main__":
    main(sys.argv[1:])
