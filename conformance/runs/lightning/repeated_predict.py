"""A data module's predict loaders repeated over their batches: the memory check's data when a recipe gives no
``make_memory_datamodule()`` and its default data predicts too little to measure memory growth."""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

from torch.utils.data import DataLoader, IterableDataset, Sampler

__all__ = ["RepeatedBatchSampler", "repeat_predict_loaders"]


class RepeatedBatchSampler(Sampler[list[int]]):
    """The batches of ``batch_sampler``, ``passes`` times over."""

    def __init__(self, batch_sampler: Sized, passes: int) -> None:
        self.batch_sampler = batch_sampler
        self.passes = passes

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.passes):
            yield from self.batch_sampler  # type: ignore[misc]

    def __len__(self) -> int:
        return self.passes * len(self.batch_sampler)


def repeat_predict_loaders(datamodule: Any, passes: int) -> list[str]:
    """Make ``datamodule.predict_dataloader()`` go ``passes`` times over the batches of the loaders it builds (a
    ``DataLoader`` over a map-style dataset is built again, same dataset, collation and workers, around a repeated
    batch sampler); returns why a loader cannot be repeated, empty when each can (checked when Lightning asks)."""
    build = datamodule.predict_dataloader
    unrepeatable: list[str] = []

    def predict_dataloader() -> Any:
        loaders = build()
        if isinstance(loaders, (list, tuple)):
            return type(loaders)(_repeated(loader, passes, unrepeatable) for loader in loaders)
        return _repeated(loaders, passes, unrepeatable)

    datamodule.predict_dataloader = predict_dataloader
    return unrepeatable


def _repeated(loader: Any, passes: int, unrepeatable: list[str]) -> Any:
    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        unrepeatable.append(f"its predict loader is a {type(loader).__qualname__}"
                            + (" over an IterableDataset" if isinstance(loader, DataLoader) else ""))
        return loader
    return DataLoader(
        loader.dataset, batch_sampler=RepeatedBatchSampler(loader.batch_sampler, passes),
        collate_fn=loader.collate_fn, num_workers=loader.num_workers, pin_memory=loader.pin_memory,
        timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context, generator=loader.generator,
        prefetch_factor=loader.prefetch_factor if loader.num_workers else None,
        persistent_workers=loader.persistent_workers,
    )
