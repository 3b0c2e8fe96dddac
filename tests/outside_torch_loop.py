"""A plain PyTorch training recipe as an outside author writes it: a tiny MLP classifier with dropout, a shuffling
``StatefulDataLoader``, AdamW with a warmup ``LambdaLR``, and checkpointing through ``torch.distributed.checkpoint``.

Run as a script it trains with its own loop (``--steps``, ``--stop-after``, ``--save``, ``--resume``, ``--out``); the
ground-truth test (``tests/test_outside_torch_loop_ground_truth.py``) uses that mode to prove that a resumed run is
bit-identical to an uninterrupted one, outside the kit. Imported as a module it also defines the kit's conformance
class, which hands the same parts and the same step function to the kit's own loop. Not collected by the test suite.

RNG: the only randomness of a training step is dropout, drawn from torch's global CPU generator (the shuffle order
comes from the sampler's own generator, which the loader's state holds). Creating a loader iterator also draws from
the global generator (its base seed), as does a validation pass over a plain ``DataLoader``. :class:`MyRNGState`
therefore keeps the training stream apart: it remembers the generator's state as each step ends and puts it back as
the next step starts, so draws made between steps (a new epoch's iterator, validation, building the parts of a
resumed run, ``loader.state_dict()`` on a fresh loader) never reach dropout, in an uninterrupted run or a resumed one.
A loaded state waits for the first resumed step, i.e. until after the resumed run has made its iterator.
"""

from __future__ import annotations

import argparse
import random
import unittest
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.checkpoint.stateful import Stateful
from torch.utils.data import DataLoader, TensorDataset
from torchdata.stateful_dataloader import StatefulDataLoader

SEED = 1234  # the global seed of the script mode (the kit seeds with its own)
DATA_SEED = 20240611  # the synthetic data come from their own generator, whatever the global state
NUM_TRAIN, NUM_VAL, NUM_FEATURES, NUM_CLASSES = 96, 32, 16, 4
BATCH_SIZE = 8
WARMUP_STEPS = 4
VAL_EVERY = 4  # the script mode validates after every 4th step


# ---------------------------------------------------------------------------------------------------------------------
# data and model
# ---------------------------------------------------------------------------------------------------------------------

def make_datasets() -> tuple[TensorDataset, TensorDataset]:
    """Train and validation sets: noisy points labelled by a fixed random linear map, plus each sample's index."""
    gen = torch.Generator().manual_seed(DATA_SEED)
    teacher = torch.randn(NUM_FEATURES, NUM_CLASSES, generator=gen)

    def draw(n: int) -> TensorDataset:
        x = torch.randn(n, NUM_FEATURES, generator=gen)
        y = (x @ teacher + 0.5 * torch.randn(n, NUM_CLASSES, generator=gen)).argmax(dim=1)
        return TensorDataset(x, y, torch.arange(n))

    return draw(NUM_TRAIN), draw(NUM_VAL)


class TinyMLP(nn.Module):
    """16 -> 48 -> 48 -> 4, GELU, dropout after each hidden layer (3,364 parameters)."""

    def __init__(self, hidden: int = 48, p_drop: float = 0.15) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(NUM_FEATURES, hidden), nn.GELU(), nn.Dropout(p_drop),
            nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(p_drop),
            nn.Linear(hidden, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def warmup(step: int) -> float:
    """LR factor: linear warmup over WARMUP_STEPS, then a slow inverse-sqrt decay."""
    if step < WARMUP_STEPS:
        return (step + 1) / WARMUP_STEPS
    return (WARMUP_STEPS / (step + 1)) ** 0.5


def build_parts() -> dict[str, Any]:
    """Model, optimizer, scheduler, train and validation loaders, built from the global RNG as it is (the caller
    seeds first): the weights' init and the sampler's generator seed are drawn from it."""
    train_set, val_set = make_datasets()
    model = TinyMLP()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup)
    loader = StatefulDataLoader(train_set, batch_size=BATCH_SIZE, shuffle=True, num_workers=0)
    val_loader = DataLoader(val_set, batch_size=16, shuffle=False)
    return {"model": model, "optimizer": optimizer, "scheduler": scheduler, "loader": loader,
            "val_loader": val_loader, "loss_fn": nn.CrossEntropyLoss()}


def train_one_step(parts: Mapping[str, Any], batch: Any) -> torch.Tensor:
    """One optimizer step on ``batch`` (x, y, index): forward, loss, backward, clip, step, schedule, zero grads."""
    model, optimizer, scheduler = parts["model"], parts["optimizer"], parts["scheduler"]
    x, y = batch[0], batch[1]
    model.train()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def evaluate(parts: Mapping[str, Any], batch: Any) -> torch.Tensor:
    """Validation loss of one batch, in eval mode (no dropout), leaving the model in train mode."""
    model = parts["model"]
    model.eval()
    with torch.no_grad():
        loss = nn.functional.cross_entropy(model(batch[0]), batch[1])
    model.train()
    return loss


# ---------------------------------------------------------------------------------------------------------------------
# RNG and checkpointing
# ---------------------------------------------------------------------------------------------------------------------

class MyRNGState:
    """The training RNG stream (torch's global CPU generator; nothing here draws from python or numpy), carried from
    the end of one training step to the start of the next, and through a checkpoint as a uint8 tensor."""

    def __init__(self) -> None:
        self._stream: torch.Tensor | None = None  # the generator's state where the last step left it

    def on_train_step_start(self) -> None:
        """Put the generator back where the previous step (or the checkpoint) left it."""
        if self._stream is not None:
            torch.set_rng_state(self._stream)

    def on_train_step_end(self) -> None:
        """Remember where this step left the generator."""
        self._stream = torch.get_rng_state()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The carried stream (the live generator's state before the first step)."""
        return {"torch_cpu": self._stream if self._stream is not None else torch.get_rng_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Keep the saved stream; it is applied by the next ``on_train_step_start``, after the iterator exists."""
        self._stream = torch.as_tensor(state["torch_cpu"], dtype=torch.uint8).clone()


class RestoredTooEarlyRNGState(MyRNGState):
    """Negative control only (``--rng early``): no carrying between steps, and a loaded state is applied at once,
    i.e. before the resumed run makes its loader iterator, whose base seed then shifts dropout by one draw."""

    def on_train_step_start(self) -> None:
        pass

    def on_train_step_end(self) -> None:
        pass

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"torch_cpu": torch.get_rng_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        torch.set_rng_state(torch.as_tensor(state["torch_cpu"], dtype=torch.uint8))


class AppState(Stateful):
    """Everything a resumed run needs, as ``torch.distributed.checkpoint`` saves it: model and optimizer by parameter
    name, the scheduler, the loader's position (incl. its sampler's generator), the step counter and the RNG."""

    def __init__(self, parts: Mapping[str, Any], rng: MyRNGState, restore_rng: bool = True) -> None:
        self.parts, self.rng, self.restore_rng = parts, rng, restore_rng
        self.step = 0

    def state_dict(self) -> dict[str, Any]:
        model_sd, optim_sd = get_state_dict(self.parts["model"], self.parts["optimizer"])
        return {"model": model_sd, "optimizer": optim_sd, "scheduler": self.parts["scheduler"].state_dict(),
                "loader": self.parts["loader"].state_dict(), "step": self.step, "rng": self.rng.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_state_dict(self.parts["model"], self.parts["optimizer"], model_state_dict=state_dict["model"],
                       optim_state_dict=state_dict["optimizer"])
        self.parts["scheduler"].load_state_dict(state_dict["scheduler"])
        self.parts["loader"].load_state_dict(state_dict["loader"])
        self.step = int(state_dict["step"])
        if self.restore_rng:
            self.rng.load_state_dict(state_dict["rng"])


def save_checkpoint(app: AppState, folder: str | Path) -> None:
    """dcp.save of the whole application state (one process, no process group needed)."""
    dcp.save({"app": app}, checkpoint_id=str(folder))


def load_checkpoint(app: AppState, folder: str | Path) -> None:
    """dcp.load into freshly built parts; DCP calls ``app.state_dict()`` for the layout, then its ``load_state_dict``."""
    dcp.load({"app": app}, checkpoint_id=str(folder))


# ---------------------------------------------------------------------------------------------------------------------
# script mode: my own loop
# ---------------------------------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch, as a run starts."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(steps: int, out: Path, stop_after: int | None = None, save: Path | None = None,
        resume: Path | None = None, rng_mode: str = "carry") -> None:
    """Train up to ``steps`` optimizer steps (from a checkpoint with ``resume``); with ``stop_after``, save to
    ``save`` after that step and stop. Writes the per-step losses, sample indices, validation losses and the final
    weights to ``out`` (torch.save)."""
    seed_everything(SEED)
    parts = build_parts()
    rng = RestoredTooEarlyRNGState() if rng_mode == "early" else MyRNGState()
    app = AppState(parts, rng, restore_rng=rng_mode != "skip")
    if resume is not None:
        load_checkpoint(app, resume)
    record: dict[str, Any] = {"steps": [], "losses": [], "indices": [], "val_steps": [], "val_losses": []}
    loader = parts["loader"]
    batches = iter(loader)
    while app.step < steps:
        try:
            batch = next(batches)
        except StopIteration:  # epoch boundary: a new iterator (its sampler continues the shuffle generator)
            batches = iter(loader)
            continue
        rng.on_train_step_start()
        loss = train_one_step(parts, batch)
        rng.on_train_step_end()
        app.step += 1
        record["steps"].append(app.step)
        record["losses"].append(loss)
        record["indices"].append(batch[2])
        if app.step % VAL_EVERY == 0:
            val = torch.stack([evaluate(parts, val_batch) for val_batch in parts["val_loader"]]).mean()
            record["val_steps"].append(app.step)
            record["val_losses"].append(val)
        if app.step == stop_after:
            if save is None:
                raise ValueError("--stop-after needs --save")
            save_checkpoint(app, save)
            break
    record["losses"] = torch.stack(record["losses"]) if record["losses"] else torch.empty(0)
    record["indices"] = torch.stack(record["indices"]) if record["indices"] else torch.empty(0, BATCH_SIZE)
    record["val_losses"] = torch.stack(record["val_losses"]) if record["val_losses"] else torch.empty(0)
    record["model"] = parts["model"].state_dict()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(record, out)


def main(argv: list[str] | None = None) -> int:
    """Command line of the script mode."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, required=True, help="optimizer steps of the whole run")
    parser.add_argument("--out", type=Path, required=True, help="where to torch.save losses and final weights")
    parser.add_argument("--stop-after", type=int, default=None, help="save after this step and stop")
    parser.add_argument("--save", type=Path, default=None, help="checkpoint folder for --stop-after")
    parser.add_argument("--resume", type=Path, default=None, help="checkpoint folder to resume from")
    parser.add_argument("--rng", choices=["carry", "skip", "early"], default="carry",
                        help="carry: the recipe's RNG handling; skip: do not restore the RNG on resume; early: "
                             "restore it before the loader iterator is made (both negative controls)")
    args = parser.parse_args(argv)
    run(args.steps, args.out, stop_after=args.stop_after, save=args.save, resume=args.resume, rng_mode=args.rng)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# ---------------------------------------------------------------------------------------------------------------------
# the kit's conformance class: defined only on import (the kit imports it by name in fresh processes); the script
# mode above is the proof outside the kit and does not import the kit
# ---------------------------------------------------------------------------------------------------------------------

if __name__ != "__main__":
    from conformance import StopAndGoConformance, TrainingState

    def _parts_of(state: TrainingState) -> dict[str, Any]:
        return {"model": state.model, "optimizer": state.optimizers[0], "scheduler": state.lr_schedulers[0]}

    class TestOutsideTorchLoopStopAndGo(StopAndGoConformance, unittest.TestCase):
        """The recipe above, driven by the kit's loop: 16 steps over 12-batch epochs, stopped after step 7."""

        num_steps = 16
        stop_step = 7
        num_ranks = 1

        @classmethod
        def make_training_state(cls) -> TrainingState:
            parts = build_parts()
            return TrainingState(model=parts["model"], optimizers=[parts["optimizer"]],
                                 lr_schedulers=[parts["scheduler"]], train_loader=parts["loader"],
                                 val_loader=parts.get("val_loader"), stateful={"my_rng": MyRNGState()})

        @classmethod
        def train_step(cls, state: TrainingState, batch: Any) -> torch.Tensor:
            return train_one_step(_parts_of(state), batch)

        @classmethod
        def validation_step(cls, state: TrainingState, batch: Any) -> torch.Tensor:
            return evaluate(_parts_of(state), batch)

    class TestOutsideTorchLoopWithoutRNGCarrier(TestOutsideTorchLoopStopAndGo):
        """Negative control only: the same recipe with ``MyRNGState`` left out of the training state, so dropout after
        a resume draws from where building the parts and making the iterator left the generator."""

        @classmethod
        def make_training_state(cls) -> TrainingState:
            state = super().make_training_state()
            state.stateful = {}
            return state
