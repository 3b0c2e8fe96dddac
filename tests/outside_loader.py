"""An outside author's resumable text pipeline: synthetic documents, a word-level tokenizer, a padding collate and a
torchdata ``StatefulDataLoader`` driven by :class:`ShardedEpochSampler`, a sampler that shards one shuffled order
over data-parallel ranks and keeps its own position in the current epoch.

Run as a script it is a small training-loop driver with its own checkpoints (``--stop-after``, ``--save``,
``--resume``, ``--out``); ``tests/test_outside_loader.py`` uses that mode for ground truth without the kit. Imported
as a module it also defines the kit's conformance class :class:`TestOutsideLoaderResume` (script mode never imports
the kit). Not collected by the test suite itself.

Sharding: epoch ``e`` has one order of all documents (drawn from ``numpy.random.default_rng([seed, e])``, never from
the global RNG), cut to a multiple of the world size; rank ``r`` takes every ``world_size``-th position starting at
``r``. With a per-rank batch of ``GLOBAL_BATCH // world_size`` and ``drop_last``, step ``s`` of the ranks together
draws positions ``[s * GLOBAL_BATCH, (s + 1) * GLOBAL_BATCH)`` of that order, whatever the world size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torchdata.stateful_dataloader import StatefulDataLoader

CORPUS_SEED = 314  # the synthetic documents
SHUFFLE_SEED = 2718  # the per-epoch orders (seeded with [SHUFFLE_SEED, epoch])
NUM_DOCUMENTS = 44  # 5 full global batches of 8 per epoch; the last 4 documents of each order are dropped
GLOBAL_BATCH = 8
MAX_TOKENS = 18  # including [BOS] and [EOS]
CHECKPOINT_FORMAT = 1

_WORDS = ("the", "a", "loader", "resumes", "exactly", "where", "it", "stopped", "after", "every", "step", "rank",
          "epoch", "sample", "batch", "shuffle", "worker", "checkpoint", "state", "order", "token", "padding",
          "mask", "model", "data", "parallel", "is", "and", "of", "to", "in", "on", "with", "each", "new", "same")
_UNKNOWN_WORDS = ("zyzzyva", "quux", "frobnicate")  # in the corpus, not in the vocabulary: they become [UNK]


class WordTokenizer:
    """A lower-casing word-level tokenizer: ``encode(text)`` gives ``[BOS] word ids [EOS]``, truncated to a length."""

    PAD, UNK, BOS, EOS = 0, 1, 2, 3
    _SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")

    def __init__(self, words: Sequence[str], max_tokens: int) -> None:
        """Build a vocabulary of the special tokens followed by ``words``, in order."""
        if max_tokens < 3:
            raise ValueError(f"max_tokens must leave room for [BOS], a word and [EOS], got {max_tokens}")
        self.vocab = {token: number for number, token in enumerate((*self._SPECIALS, *words))}
        self.max_tokens = max_tokens

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``: [BOS], one id per word (unknown words as [UNK]), [EOS], at most max_tokens."""
        ids = [self.vocab.get(word, self.UNK) for word in re.findall(r"[a-z]+", text.lower())]
        return [self.BOS, *ids[: self.max_tokens - 2], self.EOS]


def synthetic_corpus(count: int, seed: int = CORPUS_SEED) -> list[str]:
    """``count`` documents of 2 to 24 words, the same for the same ``seed`` in every process."""
    rng = np.random.default_rng(seed)
    pool = _WORDS + _UNKNOWN_WORDS
    return [" ".join(pool[int(k)] for k in rng.integers(0, len(pool), size=int(rng.integers(2, 25))))
            for _ in range(count)]


class TokenizedDocuments(Dataset):
    """A map-style dataset: item ``i`` is ``{"idx": i, "input_ids": tokens of document i}``."""

    def __init__(self, documents: Sequence[str], tokenizer: WordTokenizer) -> None:
        """Tokenize every document once, up front."""
        self.token_ids = [tokenizer.encode(text) for text in documents]

    def __len__(self) -> int:
        """The number of documents."""
        return len(self.token_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Document ``index`` with its own index, so every batch says which samples it holds."""
        return {"idx": int(index), "input_ids": self.token_ids[index]}


@dataclass(frozen=True)
class PadCollate:
    """Collate items into ``{"idx", "input_ids", "attention_mask"}`` tensors, right-padded to the longest item."""

    pad_id: int = WordTokenizer.PAD

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """One batch: int64 indices, [batch, longest] token ids padded with pad_id, and a 1/0 mask of real tokens."""
        longest = max(len(item["input_ids"]) for item in items)
        input_ids = torch.full((len(items), longest), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), longest), dtype=torch.long)
        for row, item in enumerate(items):
            tokens = torch.as_tensor(item["input_ids"], dtype=torch.long)
            input_ids[row, : len(tokens)] = tokens
            attention_mask[row, : len(tokens)] = 1
        return {"idx": torch.tensor([int(item["idx"]) for item in items], dtype=torch.long),
                "input_ids": input_ids, "attention_mask": attention_mask}


class _Cursor:
    """Where one pass of the sampler is: its epoch and how many of its rank's indices it has handed out."""

    __slots__ = ("epoch", "offset")

    def __init__(self, epoch: int, offset: int) -> None:
        """A position ``offset`` into the rank's share of ``epoch``'s order."""
        self.epoch, self.offset = epoch, offset


class ShardedEpochSampler(Sampler[int]):
    """Yields this rank's share of epoch ``set_epoch(e)``'s shuffled order; ``state_dict()`` is the position of the
    latest pass (its epoch and offset), and after ``load_state_dict`` the next pass continues from that position."""

    def __init__(self, num_samples: int, rank: int, world_size: int, seed: int = SHUFFLE_SEED) -> None:
        """A sampler over ``range(num_samples)`` for data-parallel ``rank`` of ``world_size``."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of size {world_size}")
        self.num_samples, self.rank, self.world_size, self.seed = num_samples, rank, world_size, seed
        self.epoch = 0
        self._cursor = _Cursor(0, 0)
        self._pending: _Cursor | None = None

    def set_epoch(self, epoch: int) -> None:
        """Make passes that start fresh (not from a loaded position) draw ``epoch``'s order."""
        self.epoch = int(epoch)

    def share(self, epoch: int) -> list[int]:
        """This rank's indices of ``epoch``'s order, in order."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
        usable = self.num_samples - self.num_samples % self.world_size
        return [int(index) for index in order[:usable][self.rank::self.world_size]]

    def __len__(self) -> int:
        """The size of this rank's share of an epoch."""
        return self.num_samples // self.world_size

    def __iter__(self) -> Iterator[int]:
        """A pass from the loaded position if one is pending, else from the start of the epoch set last."""
        cursor = self._pending or _Cursor(self.epoch, 0)
        self._pending, self._cursor = None, cursor  # taken now, not at the first next(): a pass never started
        return self._walk(cursor)  # (torchdata builds some it drops) must not leave the position pending

    def _walk(self, cursor: _Cursor) -> Iterator[int]:
        for index in self.share(cursor.epoch)[cursor.offset:]:
            cursor.offset += 1
            yield index

    def state_dict(self) -> dict[str, int]:
        """The position as plain ints: the pending one if loaded but not yet iterated, else the latest pass's."""
        cursor = self._pending or self._cursor
        return {"epoch": cursor.epoch, "offset": cursor.offset, "seed": self.seed, "world_size": self.world_size,
                "rank": self.rank}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Make the next pass continue at ``state``'s epoch and offset; the state must be of this rank's shard."""
        mine = {"seed": self.seed, "world_size": self.world_size, "rank": self.rank}
        saved = {key: int(state[key]) for key in mine}
        if saved != mine:
            raise ValueError(f"the sampler state was saved for {saved}, this sampler is {mine}")
        self._pending = _Cursor(int(state["epoch"]), int(state["offset"]))


def build_loader(rank: int, world_size: int, num_workers: int) -> StatefulDataLoader:
    """A fresh loader of rank ``rank``'s batches of ``GLOBAL_BATCH // world_size`` documents, full batches only."""
    if GLOBAL_BATCH % world_size:
        raise ValueError(f"the global batch of {GLOBAL_BATCH} does not split over {world_size} ranks")
    dataset = TokenizedDocuments(synthetic_corpus(NUM_DOCUMENTS), WordTokenizer(_WORDS, MAX_TOKENS))
    sampler = ShardedEpochSampler(len(dataset), rank, world_size)
    return StatefulDataLoader(dataset, batch_size=GLOBAL_BATCH // world_size, sampler=sampler, drop_last=True,
                              num_workers=num_workers, collate_fn=PadCollate())


# --- script mode: this author's own training-loop driver -------------------------------------------------------

def _save_checkpoint(path: Path, epoch: int, step: int, loader: StatefulDataLoader) -> None:
    """Write ``{"format", "epoch", "step", "loader"}`` to ``path`` with torch.save, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save({"format": CHECKPOINT_FORMAT, "epoch": epoch, "step": step, "loader": loader.state_dict()}, partial)
    os.replace(partial, path)


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run the epoch loop the arguments describe and return its record: per step ``[step, epoch, ids]``."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    loader = build_loader(args.rank, args.world_size, args.num_workers)
    epoch, step = 0, 0
    if args.resume:
        saved = torch.load(args.resume, weights_only=True)
        if saved.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{args.resume} is not a checkpoint of format {CHECKPOINT_FORMAT}")
        epoch, step = int(saved["epoch"]), int(saved["step"])
        if not args.drop_loader_state:
            loader.load_state_dict(saved["loader"])
    steps: list[list[Any]] = []
    tokens_seen = 0  # the "training" of this driver: count the real tokens of every batch
    while epoch < args.epochs:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            step += 1
            tokens_seen += int(batch["attention_mask"].sum())
            steps.append([step, epoch, [int(i) for i in batch["idx"].tolist()]])
            if step == args.stop_after:
                _save_checkpoint(Path(args.save), epoch, step, loader)
                return {"steps": steps, "stopped_after": step, "tokens_seen": tokens_seen}
        epoch += 1
    return {"steps": steps, "stopped_after": None, "tokens_seen": tokens_seen}


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--world-size", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--stop-after", type=int, default=None, help="save after this step (1-based) and stop")
    parser.add_argument("--save", default=None, help="checkpoint written by --stop-after")
    parser.add_argument("--resume", default=None, help="checkpoint to continue from")
    parser.add_argument("--drop-loader-state", action="store_true",
                        help="on --resume, restore epoch and step but not the loader (a deliberately broken resume)")
    parser.add_argument("--out", required=True, help="JSON record of the steps this run drew")
    args = parser.parse_args(argv)
    if (args.stop_after is None) != (args.save is None):
        parser.error("--stop-after and --save go together")
    return args


def main(argv: Sequence[str]) -> None:
    """Parse ``argv``, train, and write the run's record as JSON to ``--out``."""
    args = _parse(argv)
    warnings.filterwarnings("ignore", "'set_vital' is deprecated")  # torchdata 0.11 on torch 2.13, at every iter()
    record = {"rank": args.rank, "world_size": args.world_size, "num_workers": args.num_workers, **train(args),
              "imported_kit": "conformance" in sys.modules}
    Path(args.out).write_text(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1:])


if __name__ != "__main__":
    import unittest

    from conformance import DataModuleResumeConformance

    class TestOutsideLoaderResume(DataModuleResumeConformance, unittest.TestCase):
        """The kit's certificate for :func:`build_loader` (epoch reshuffling through the default start_epoch)."""

        @classmethod
        def make_loader(cls, rank: int, world_size: int, num_workers: int) -> StatefulDataLoader:
            """A fresh loader of ``rank``'s share, as the script mode builds it."""
            return build_loader(rank, world_size, num_workers)
