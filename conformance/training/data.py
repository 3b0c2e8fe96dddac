"""Megatron-style data resume: a consumed-samples batch sampler and a ``ResumableDataModule`` mixin.

A training run's position in its data is one integer, the number of samples consumed so far. The sampler turns
that integer into the exact next micro-batch for this data-parallel rank; the mixin keeps the integer in the
data module's ``state_dict`` so a Lightning checkpoint carries it, and computes it from the trainer's global step
(never from how far a prefetching loader has run ahead).

Layout of the global sample stream: each epoch is an ordering of the dataset (identity, or a permutation seeded
from ``seed + epoch``), cut into global batches of ``global_batch_size`` samples. Rank ``r`` of ``R`` takes the
``r``-th contiguous slice of every global batch and yields it as micro-batches of ``micro_batch_size``. The
global stream therefore depends only on the global batch size, never on the number of ranks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader, Dataset

from conformance.errors import ElasticResumeRefused

__all__ = ["ConsumedSamplesBatchSampler", "ResumableDataModule", "datamodule_consumed_samples", "resolve_data_parallel"]


def datamodule_consumed_samples(trainer: Any) -> int | None:
    """The trainer's attached data module's ``state_dict()['consumed_samples']``, or None if it keeps no such count."""
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None:
        return None
    value = datamodule.state_dict().get("consumed_samples")
    return None if value is None else int(value)


class ConsumedSamplesBatchSampler:
    """Yields this rank's micro-batches of dataset indices, starting after ``consumed_samples`` global samples."""

    def __init__(
        self,
        total_samples: int,
        consumed_samples: int,
        micro_batch_size: int,
        global_batch_size: int,
        *,
        data_parallel_rank: int = 0,
        data_parallel_size: int = 1,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = True,
    ) -> None:
        _require(total_samples > 0, f"total_samples must be positive, got {total_samples}: the dataset is empty")
        _require(micro_batch_size > 0, f"micro_batch_size must be positive, got {micro_batch_size}")
        _require(data_parallel_size > 0, f"data_parallel_size must be positive, got {data_parallel_size}")
        _require(
            0 <= data_parallel_rank < data_parallel_size,
            f"data_parallel_rank {data_parallel_rank} is outside [0, {data_parallel_size})",
        )
        per_step = micro_batch_size * data_parallel_size
        _require(
            global_batch_size > 0 and global_batch_size % per_step == 0,
            f"global_batch_size {global_batch_size} must be a positive multiple of micro_batch_size x "
            f"data_parallel_size = {micro_batch_size} x {data_parallel_size}; change one of them",
        )
        _require(
            consumed_samples >= 0 and consumed_samples % global_batch_size == 0,
            f"consumed_samples {consumed_samples} must be a non-negative multiple of global_batch_size "
            f"{global_batch_size}: a run can only stop between optimizer steps",
        )
        if drop_last:
            _require(
                total_samples >= global_batch_size,
                f"the dataset has {total_samples} samples, fewer than one global batch of {global_batch_size}; "
                "with drop_last=True no batch would ever be drawn",
            )
        self.total_samples = total_samples
        self.consumed_samples = consumed_samples
        self.micro_batch_size = micro_batch_size
        self.global_batch_size = global_batch_size
        self.data_parallel_rank = data_parallel_rank
        self.data_parallel_size = data_parallel_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last

    @property
    def samples_per_epoch(self) -> int:
        """Global samples drawn in one epoch (a partial last global batch counts only when kept)."""
        if self.drop_last:
            return self.total_samples - self.total_samples % self.global_batch_size
        return self.total_samples

    def __len__(self) -> int:
        """Micro-batches this rank yields in a *whole* epoch.

        Lightning counts batches within an epoch from its restored loop state, so a resumed loader reports the full
        epoch length: batch indices and validation intervals then line up with an uninterrupted run.
        """
        full, partial = divmod(self.samples_per_epoch, self.global_batch_size)
        count = full * (self.global_batch_size // (self.micro_batch_size * self.data_parallel_size))
        if partial:
            count += _ceil_div(_rank_slice_length(partial, self.data_parallel_size, 0), self.micro_batch_size)
        return count

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The global order of dataset indices in ``epoch``: a permutation seeded by ``seed + epoch`` if shuffled."""
        if not self.shuffle:
            return torch.arange(self.total_samples)
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.total_samples, generator=generator)

    def __iter__(self) -> Iterator[list[int]]:
        """Yield the rest of the current epoch; once the first batch is drawn, the sampler points at the next epoch.

        The pointer moves when the first batch is drawn, not after the last: a loader that knows its length never
        asks for the item after the last one. Nor does it move on ``iter()`` alone: a multi-worker ``DataLoader``
        creates a sampler iterator, discards it unused and creates another.
        """
        epoch, offset = divmod(self.consumed_samples, self.samples_per_epoch)
        self.consumed_samples = (epoch + 1) * self.samples_per_epoch
        yield from self._epoch_micro_batches(self.epoch_order(epoch), offset)

    def _epoch_micro_batches(self, order: torch.Tensor, offset: int) -> Iterator[list[int]]:
        for start in range(offset, self.samples_per_epoch, self.global_batch_size):
            yield from self._rank_micro_batches(order[start : min(start + self.global_batch_size,
                                                                  self.samples_per_epoch)])

    def _rank_micro_batches(self, global_batch: torch.Tensor) -> Iterator[list[int]]:
        size = len(global_batch)
        per_rank = _ceil_div(size, self.data_parallel_size)
        mine = global_batch[self.data_parallel_rank * per_rank : (self.data_parallel_rank + 1) * per_rank]
        for first in range(0, len(mine), self.micro_batch_size):
            yield mine[first : first + self.micro_batch_size].tolist()


class ResumableDataModule:
    """Mixin for a ``LightningDataModule`` whose ``state_dict`` holds consumed samples, Megatron style.

    Set ``micro_batch_size`` and ``global_batch_size`` in ``__init__`` and build the train loader with
    :meth:`resumable_train_dataloader`; it keeps the bookkeeping, so consumed samples are always ``samples consumed
    when the loader was built + micro-batches trained since x micro_batch_size x data-parallel size``. Micro-batches,
    not optimizer steps: under manual optimization Lightning's ``global_step`` counts every ``optimizer.step()``, so
    two optimizers would count each batch twice. The train loader drops a partial last global batch of each epoch
    (an optimizer step always sees a full one).
    """

    micro_batch_size: int
    global_batch_size: int
    #: A checkpoint resumes on another number of data-parallel ranks (the global batch size fixed): the global sample
    #: order depends only on the global batch size, and Lightning's position within the epoch is translated (see
    #: ``resumable_train_dataloader``).
    supports_elastic_resume: ClassVar[bool] = True
    _loaded_consumed_samples: int | None = None
    _loaded_data_parallel_size: int | None = None
    _loader_consumed_samples: int = 0
    _loader_batches_trained: int | None = None

    def state_dict(self) -> dict[str, int]:
        """The resume state: consumed samples, and the global batch size and data-parallel size of the run."""
        return {
            "consumed_samples": self.consumed_samples,
            "global_batch_size": self.global_batch_size,
            "data_parallel_size": resolve_data_parallel(getattr(self, "trainer", None))[1],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore consumed samples saved by :meth:`state_dict`; the next train loader starts right after them."""
        missing = {"consumed_samples", "global_batch_size"} - set(state_dict)
        _require(not missing, f"{type(self).__name__}.load_state_dict: the state lacks {sorted(missing)}")
        saved_gbs = int(state_dict["global_batch_size"])
        _require(
            saved_gbs == self.global_batch_size,
            f"{type(self).__name__}.load_state_dict: the checkpoint was saved with global_batch_size {saved_gbs} "
            f"but this data module uses {self.global_batch_size}; resume with the same global batch size",
        )
        self._loaded_consumed_samples = int(state_dict["consumed_samples"])
        self._loaded_data_parallel_size = state_dict.get("data_parallel_size")

    @property
    def consumed_samples(self) -> int:
        """Global samples consumed by the micro-batches trained so far (the next sample to draw is this index)."""
        if self._loaded_consumed_samples is not None:
            return self._loaded_consumed_samples
        if self._loader_batches_trained is None:
            return 0
        batches_since_loader = self._batches_trained() - self._loader_batches_trained
        samples_per_batch = self.micro_batch_size * resolve_data_parallel(getattr(self, "trainer", None))[1]
        return self._loader_consumed_samples + batches_since_loader * samples_per_batch

    def resumable_train_dataloader(
        self, dataset: Dataset, *, shuffle: bool = False, seed: int = 0, **loader_kwargs: Any
    ) -> DataLoader:
        """A train loader that resumes at :attr:`consumed_samples`; call it from ``train_dataloader()``.

        Resuming on another data-parallel size, Lightning's restored count of this epoch's micro-batches (per rank,
        so it changes with the rank count) is translated to the new size: gradient accumulation, validation
        intervals and the end of the epoch then line up with a run that had this size from the start.
        """
        self._translate_elastic_resume()
        self._loader_consumed_samples = self.consumed_samples
        self._loader_batches_trained = self._batches_trained()
        self._loaded_consumed_samples = None
        return self._loader(dataset, self._loader_consumed_samples, shuffle=shuffle, seed=seed, drop_last=True,
                            **loader_kwargs)

    def resumable_eval_dataloader(self, dataset: Dataset, **loader_kwargs: Any) -> DataLoader:
        """A validation/test/predict loader: always from the first sample, partial last batch kept."""
        return self._loader(dataset, 0, shuffle=False, seed=0, drop_last=False, **loader_kwargs)

    def _loader(self, dataset: Dataset, consumed: int, *, shuffle: bool, seed: int, drop_last: bool,
                **loader_kwargs: Any) -> DataLoader:
        missing = [name for name in ("micro_batch_size", "global_batch_size") if not hasattr(self, name)]
        _require(not missing, f"{type(self).__name__} is a ResumableDataModule without {' or '.join(missing)}: set "
                              "micro_batch_size and global_batch_size in its __init__ before building loaders")
        rank, size = resolve_data_parallel(getattr(self, "trainer", None))
        sampler = ConsumedSamplesBatchSampler(
            len(dataset), consumed, self.micro_batch_size, self.global_batch_size,
            data_parallel_rank=rank, data_parallel_size=size, shuffle=shuffle, seed=seed, drop_last=drop_last,
        )
        return DataLoader(dataset, batch_sampler=sampler, **loader_kwargs)

    def _translate_elastic_resume(self) -> None:
        """After a checkpoint of ``saved`` data-parallel ranks, rescale Lightning's restored micro-batch counters to
        this run's rank count (each rank draws ``saved / current`` times as many micro-batches per global batch)."""
        saved, self._loaded_data_parallel_size = self._loaded_data_parallel_size, None
        trainer = getattr(self, "trainer", None)
        current = resolve_data_parallel(trainer)[1]
        if saved is None or int(saved) == current:
            return
        if not self.supports_elastic_resume:
            raise ElasticResumeRefused(
                f"{type(self).__name__}: the checkpoint was saved on {saved} data-parallel rank(s) and this run has "
                f"{current}, and the data module declares supports_elastic_resume = False; resume on {saved} rank(s)")
        progress = _batch_progress(trainer)
        if progress is None:
            raise ElasticResumeRefused(f"{type(self).__name__}: resuming on {current} instead of {saved} data-parallel "
                                       "rank(s) needs a Lightning trainer's fit loop to translate its position")
        for counts in (progress.current, progress.total):
            scaled, remainder = divmod(counts.ready * int(saved), current)
            if remainder:
                raise ElasticResumeRefused(
                    f"{type(self).__name__}: the checkpoint's position ({counts.ready} micro-batches on each of {saved} "
                    f"rank(s)) is not a whole number of micro-batches on {current} rank(s); checkpoint between "
                    "optimizer steps")
            offsets = (counts.started - counts.ready, counts.processed - counts.ready, counts.completed - counts.ready)
            counts.ready = scaled
            counts.started, counts.processed, counts.completed = (scaled + offset for offset in offsets)

    def _batches_trained(self) -> int:
        """Micro-batches this rank has trained on in the fit so far, restored ones included (0 outside a fit):
        Lightning's processed count, raised before the batch-end hooks that save checkpoints."""
        progress = _batch_progress(getattr(self, "trainer", None))
        return 0 if progress is None else int(progress.total.processed)


def resolve_data_parallel(trainer: Any) -> tuple[int, int]:
    """(data-parallel rank, data-parallel size) of a Lightning trainer, (0, 1) without one."""
    if trainer is None:
        return 0, 1
    kwargs = getattr(trainer.strategy, "distributed_sampler_kwargs", None) or {}
    return int(kwargs.get("rank", 0)), int(kwargs.get("num_replicas", 1))


def _batch_progress(trainer: Any) -> Any:
    """The training micro-batch counters of a Lightning trainer's fit loop, None without one."""
    return getattr(getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None), "batch_progress", None)


def _rank_slice_length(size: int, ranks: int, rank: int) -> int:
    per_rank = _ceil_div(size, ranks)
    return max(0, min(size, (rank + 1) * per_rank) - rank * per_rank)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
