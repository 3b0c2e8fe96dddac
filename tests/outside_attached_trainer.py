"""A small self-contained language-model trainer, written in the style of NeMo AutoModel / torchtitan recipes.

Everything here is the trainer's own: the config dataclass, the model (a tiny causal transformer with dropout), the
synthetic token data, the ``StatefulDataLoader`` (a ``DistributedSampler`` when the world has several ranks), AdamW
with a warmup + cosine ``LambdaLR``, gradient accumulation, gradient clipping, periodic evaluation, seeding, and a
checkpoint manager that writes ``checkpoint_dir/step_<N>/`` with ``torch.distributed.checkpoint`` (model + optimizer)
plus one ``torch.save`` file per rank (scheduler, counters, dataloader position, RNG states).

Run it from the command line (one rank, or several ranks launched torchelastic style with RANK / WORLD_SIZE /
MASTER_ADDR / MASTER_PORT in the environment)::

    python tests/outside_attached_trainer.py --max-steps 10 --schedule-steps 10 --out run.pt
    python tests/outside_attached_trainer.py --max-steps 4 --schedule-steps 10 --save-at 4 --checkpoint-dir ckpt
    python tests/outside_attached_trainer.py --max-steps 10 --schedule-steps 10 --restore-from ckpt --out resumed.pt

It imports nothing from the conformance kit.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader


# ----------------------------------------------------------------------------------------------------------- config
@dataclass
class TrainerConfig:
    seed: int = 1234
    # model
    vocab_size: int = 64
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 2
    seq_len: int = 16
    dropout: float = 0.1
    # data
    data_seed: int = 7
    num_train_samples: int = 48
    num_val_samples: int = 16
    micro_batch_size: int = 4
    grad_accum_steps: int = 2
    # optimization
    lr: float = 3e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 2
    schedule_steps: int = 10  # length of the LR schedule (lr_decay_steps)
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0
    max_steps: int = 10  # stop the loop after this optimizer step
    # evaluation
    eval_every: int = 5
    # checkpointing
    checkpoint_dir: str | None = None
    save_at_steps: tuple[int, ...] = ()
    save_every: int | None = None
    restore_from: str | None = None
    restore_rng: bool = True  # a debugging switch: resume without the saved RNG states
    # output
    output_file: str | None = None
    log: bool = False


# ------------------------------------------------------------------------------------------------------------ model
class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: TrainerConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        mask = torch.tril(torch.ones(cfg.seq_len, cfg.seq_len, dtype=torch.bool))
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
        att = att.masked_fill(~self.causal_mask[:t, :t], float("-inf"))
        att = self.attn_dropout(att.softmax(dim=-1))
        y = (att @ v).transpose(1, 2).reshape(b, t, c)
        return self.resid_dropout(self.proj(y))


class Block(nn.Module):
    def __init__(self, cfg: TrainerConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(),
                                 nn.Linear(4 * cfg.d_model, cfg.d_model), nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyCausalLM(nn.Module):
    """Token ids (batch, seq) -> logits (batch, seq, vocab)."""

    def __init__(self, cfg: TrainerConfig) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.size(1), device=input_ids.device)
        x = self.drop(self.tok_emb(input_ids) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


# ------------------------------------------------------------------------------------------------------------- data
class SyntheticTokens(Dataset):
    """Sequences drawn from a fixed random bigram chain (learnable), deterministic from a seed."""

    def __init__(self, num_samples: int, seq_len: int, vocab_size: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        chain = np.random.default_rng(12345).dirichlet(np.full(vocab_size, 0.1), size=vocab_size)
        tokens = np.empty((num_samples, seq_len + 1), dtype=np.int64)
        tokens[:, 0] = rng.integers(0, vocab_size, size=num_samples)
        for t in range(1, seq_len + 1):
            u = rng.random(num_samples)[:, None]
            tokens[:, t] = (chain[tokens[:, t - 1]].cumsum(axis=1) < u).sum(axis=1).clip(max=vocab_size - 1)
        self.tokens = torch.from_numpy(tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = self.tokens[index]
        return {"input_ids": row[:-1], "labels": row[1:], "index": torch.tensor(index)}


# -------------------------------------------------------------------------------------------------------- schedule
def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


# ---------------------------------------------------------------------------------------------------- checkpointing
class CheckpointManager:
    """``<dir>/step_<N>/``: DCP files for model + optimizer, and ``extra_rank<r>.pt`` per rank."""

    STEP_DIR = re.compile(r"^step_(\d+)$")

    def __init__(self, rank: int) -> None:
        self.rank = rank

    @staticmethod
    def _rng_state() -> dict[str, Any]:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        return {"python": random.getstate(),
                "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                          "cached_gaussian": float(cached)},
                "torch": torch.get_rng_state()}

    @staticmethod
    def _set_rng_state(state: dict[str, Any]) -> None:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        n = state["numpy"]
        np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
        torch.set_rng_state(state["torch"])

    def save(self, trainer: Trainer, root: Path) -> Path:
        path = root / f"step_{trainer.step}"
        model_sd, optim_sd = get_state_dict(trainer.model, trainer.optimizer)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path))
        extra = {"step": trainer.step, "epoch": trainer.epoch,
                 "scheduler": trainer.scheduler.state_dict(),
                 "dataloader": trainer.train_loader.state_dict(),
                 "rng": self._rng_state()}
        tmp = path / f".extra_rank{self.rank}.pt.tmp"
        torch.save(extra, tmp)
        os.replace(tmp, path / f"extra_rank{self.rank}.pt")
        if dist.is_initialized():
            dist.barrier()
        return path

    def latest(self, root: Path) -> Path | None:
        found = []
        for child in Path(root).iterdir() if Path(root).is_dir() else ():
            match = self.STEP_DIR.match(child.name)
            if match and (child / ".metadata").exists() and (child / f"extra_rank{self.rank}.pt").exists():
                found.append((int(match.group(1)), child))
        return max(found)[1] if found else None

    def load_model_and_optimizer(self, trainer: Trainer, path: Path) -> dict[str, Any]:
        model_sd, optim_sd = get_state_dict(trainer.model, trainer.optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=str(path))
        set_state_dict(trainer.model, trainer.optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optim"])
        return torch.load(path / f"extra_rank{self.rank}.pt", weights_only=True)


# ----------------------------------------------------------------------------------------------------------- trainer
class Trainer:
    def __init__(self, cfg: TrainerConfig) -> None:
        self.cfg = cfg
        self._init_distributed()
        self.seed_everything(cfg.seed)  # on a restore the saved RNG states replace these before the first step
        self.step = 0  # completed optimizer steps
        self.epoch = 0
        model = TinyCausalLM(cfg)
        self.model: nn.Module = DistributedDataParallel(model) if self.world_size > 1 else model
        self.loss_fn = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=cfg.betas,
                                           weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(cfg.warmup_steps, cfg.schedule_steps, cfg.min_lr_ratio))
        train_set = SyntheticTokens(cfg.num_train_samples, cfg.seq_len, cfg.vocab_size, cfg.data_seed)
        val_set = SyntheticTokens(cfg.num_val_samples, cfg.seq_len, cfg.vocab_size, cfg.data_seed + 1)
        if self.world_size > 1:
            self.sampler: DistributedSampler | None = DistributedSampler(
                train_set, num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=cfg.seed)
            self.train_loader = StatefulDataLoader(train_set, batch_size=cfg.micro_batch_size,
                                                   sampler=self.sampler, drop_last=True)
        else:
            self.sampler = None
            self.train_loader = StatefulDataLoader(train_set, batch_size=cfg.micro_batch_size, shuffle=True,
                                                   drop_last=True)
        self.val_loader = DataLoader(val_set, batch_size=8, shuffle=False)
        self.checkpointer = CheckpointManager(self.rank)
        self._train_iter: Iterator | None = None
        self.history: dict[str, dict[int, Any]] = {"losses": {}, "lrs": {}, "eval": {}, "indices": {}}

    # -- setup
    def _init_distributed(self) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("gloo")
        self.rank = dist.get_rank() if dist.is_initialized() else 0

    @staticmethod
    def seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    @property
    def unwrapped_model(self) -> nn.Module:
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    # -- data
    def _make_train_iter(self) -> None:
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)
        self._train_iter = iter(self.train_loader)

    def _next_micro_batch(self) -> dict[str, torch.Tensor]:
        while True:
            if self._train_iter is None:
                self._make_train_iter()
            try:
                return next(self._train_iter)
            except StopIteration:
                self.epoch += 1
                self._train_iter = None

    # -- checkpoint
    def _should_save(self) -> bool:
        cfg = self.cfg
        if not cfg.checkpoint_dir:
            return False
        return self.step in cfg.save_at_steps or bool(cfg.save_every and self.step % cfg.save_every == 0)

    def _restore(self) -> None:
        path = self.checkpointer.latest(Path(self.cfg.restore_from))
        if path is None:
            raise FileNotFoundError(f"no complete step_<N> checkpoint in {self.cfg.restore_from}")
        extra = self.checkpointer.load_model_and_optimizer(self, path)
        self.scheduler.load_state_dict(extra["scheduler"])
        self.step, self.epoch = extra["step"], extra["epoch"]
        self.train_loader.load_state_dict(extra["dataloader"])
        self._make_train_iter()  # making the iterator draws from torch's RNG: do it before the RNG restore
        if self.cfg.restore_rng:
            self.checkpointer._set_rng_state(extra["rng"])
        if self.cfg.log and self.rank == 0:
            print(f"restored {path} (step {self.step}, epoch {self.epoch})", flush=True)

    # -- loop
    def evaluate(self) -> float:
        self.model.eval()
        total, count = torch.zeros(()), 0
        with torch.no_grad():
            for batch in self.val_loader:
                logits = self.model(batch["input_ids"])
                total += self.loss_fn(logits.reshape(-1, logits.size(-1)), batch["labels"].reshape(-1))
                count += 1
        self.model.train()
        return (total / count).item()

    def train_step(self) -> torch.Tensor:
        cfg = self.cfg
        micro_losses, indices = [], []
        self.optimizer.zero_grad(set_to_none=True)
        for micro in range(cfg.grad_accum_steps):
            batch = self._next_micro_batch()
            indices.append(batch["index"])
            sync_grads = micro == cfg.grad_accum_steps - 1 or not isinstance(self.model, DistributedDataParallel)
            context = self.model.no_sync() if not sync_grads else contextlib.nullcontext()
            with context:
                logits = self.model(batch["input_ids"])
                loss = self.loss_fn(logits.reshape(-1, logits.size(-1)), batch["labels"].reshape(-1))
                (loss / cfg.grad_accum_steps).backward()
            micro_losses.append(loss.detach())
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        self.history["lrs"][self.step + 1] = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.history["indices"][self.step] = torch.cat(indices)
        return torch.stack(micro_losses)

    def train(self) -> dict[str, Any]:
        cfg = self.cfg
        self.model.train()
        if cfg.restore_from:
            self._restore()
        while self.step < cfg.max_steps:
            losses = self.train_step()
            self.history["losses"][self.step] = losses
            if cfg.log and self.rank == 0:
                print(f"step {self.step} epoch {self.epoch} loss {losses.mean().item():.5f}", flush=True)
            if cfg.eval_every and self.step % cfg.eval_every == 0:
                self.history["eval"][self.step] = self.evaluate()
            if self._should_save():
                self.checkpointer.save(self, Path(cfg.checkpoint_dir))
        result = {**self.history, "step": self.step, "epoch": self.epoch, "world_size": self.world_size,
                  "rank": self.rank,
                  "weights": {k: v.detach().clone() for k, v in self.unwrapped_model.state_dict().items()}}
        if cfg.output_file:
            out = Path(cfg.output_file)
            if self.world_size > 1:
                out = out.with_name(f"{out.stem}.rank{self.rank}{out.suffix}")
            torch.save(result, out)
        return result


# --------------------------------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> TrainerConfig:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--schedule-steps", type=int, default=None, help="LR schedule length (default max steps)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--save-at", type=int, action="append", default=[])
    parser.add_argument("--save-every", type=int, default=None)
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--restore-from", default=None)
    parser.add_argument("--no-restore-rng", action="store_true")
    parser.add_argument("--out", default=None, help="torch.save file of per-step losses and final weights")
    parser.add_argument("--log", action="store_true")
    args = parser.parse_args(argv)
    return TrainerConfig(seed=args.seed, max_steps=args.max_steps,
                         schedule_steps=args.schedule_steps or args.max_steps, eval_every=args.eval_every,
                         save_at_steps=tuple(args.save_at), save_every=args.save_every,
                         checkpoint_dir=args.checkpoint_dir, restore_from=args.restore_from,
                         restore_rng=not args.no_restore_rng, output_file=args.out, log=args.log)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    trainer = Trainer(cfg)
    try:
        trainer.train()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
