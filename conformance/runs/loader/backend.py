"""DataModuleResumeConformance on a stateful loader outside Lightning: a recipe's ``make_loader(rank, world_size,
num_workers)`` returns a loader with ``state_dict()``/``load_state_dict()`` (a torchdata ``StatefulDataLoader``, or
the recipe's own) for one data-parallel rank, and the kit iterates it in its own epoch loop
(:mod:`conformance.runs.loader.probe`)."""

from __future__ import annotations

import inspect
import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import IterableDataset

from conformance._setup_checks import described
from conformance.runs.data_probe import MAX_STATE_BYTES, DataCapabilities, ProbeLog, ProbePlan
from conformance.runs.loader.probe import loader_checkpoint, quiet_torchdata, run_loader_probe

__all__ = ["LOADER", "LoaderBackend"]

class LoaderBackend:
    """Probes a recipe's stateful loader in the kit's own epoch loop (see the module docstring)."""

    required_hooks: ClassVar[tuple[str, ...]] = ("make_loader",)
    not_applicable: ClassVar[Mapping[str, str]] = {
        "test_validation_starts_at_first_sample": "make_loader builds the training loader only; a validation loader "
                                                  "that is rebuilt for every pass starts at its first sample by "
                                                  "construction",
        "test_state_restored_before_first_batch": "the kit itself loads the saved state into a fresh loader before "
                                                  "anything iterates it; whether the loader then continues at the next "
                                                  "sample is test_resume_continues_exactly",
        "test_elastic_resume": "a loader's state is one rank's position (torchdata's StatefulDataLoader keeps it per "
                               "rank), with no defined way to split or merge it over another number of ranks",
    }
    unreported_consumed_samples: ClassVar[str | None] = ("a loader's state keeps its own positions (sampler, "
                                                         "workers), not a consumed-samples count")

    def label(self, recipe: type) -> str:
        return "stateful loader (kit's epoch loop)"

    def environment_label(self, recipe: type) -> str | None:
        return None

    def settings_problems(self, recipe: type) -> list[str]:
        hook = inspect.getattr_static(recipe, "make_loader", None)
        if isinstance(hook, (classmethod, staticmethod)):
            try:
                inspect.signature(recipe.make_loader).bind(0, 1, 0)
            except TypeError:
                return [(f"make_loader{inspect.signature(recipe.make_loader)} cannot be called as make_loader(rank, "
                        "world_size, num_workers): take those three arguments and build that rank's loader")]
        return []

    def recipe_problems(self, recipe: type) -> list[str]:
        """The loader of rank 0 must be fresh, iterable, have state_dict()/load_state_dict(), and its state must
        survive torch.save and weights-only loading; its first batch must carry sample ids."""
        with quiet_torchdata():
            return self._built_loader_problems(recipe)

    @staticmethod
    def _built_loader_problems(recipe: type) -> list[str]:
        first, second = recipe.make_loader(0, 1, 0), recipe.make_loader(0, 1, 0)
        built = f"make_loader(0, 1, 0) returned {described(first)}"
        missing = [name for name in ("state_dict", "load_state_dict") if not callable(getattr(first, name, None))]
        if missing or not isinstance(first, Iterable):
            lacks = " and ".join([*(f"{name}()" for name in missing), *([] if isinstance(first, Iterable) else
                                                                           ["__iter__"])])
            return [(f"{built}, which has no {lacks}: return a torchdata.stateful_dataloader.StatefulDataLoader, or a "
                    "loader with state_dict() and load_state_dict() that resumes where it stopped")]
        if first is second:
            return [(f"{built}, the same object on two calls: build a new loader on every call (each run starts from "
                    "its own)")]
        problems = _state_problems(first.state_dict())
        try:
            recipe.sample_ids(next(iter(second)))
        except StopIteration:
            problems.append(f"{built}, which yields no batch: give it a dataset of at least 3 batches")
        except Exception as exc:  # noqa: BLE001 - reported as the set-up problem it is
            problems.append(f"sample_ids() cannot read the first batch of make_loader(0, 1, 0): {exc}")
        return problems

    def capabilities(self, recipe: type) -> DataCapabilities:
        """An iterable dataset's order depends on the worker count; a map-style one keeps its sampler's."""
        with quiet_torchdata():
            dataset = getattr(recipe.make_loader(0, 1, 0), "dataset", None)
        return DataCapabilities(global_batch_size=None, supports_elastic_resume=None,
                                order_depends_on_workers=isinstance(dataset, IterableDataset))

    def run_probe(self, recipe: type, plan: ProbePlan) -> list[ProbeLog]:
        return run_loader_probe(recipe, plan)

    def checkpoint_state_problems(self, recipe: type, checkpoint: Path, step: int) -> list[str]:
        """Rank 0's saved loader state must load weights-only and stay small."""
        path = loader_checkpoint(checkpoint, 0)
        if not path.exists():
            return [f"no loader state was saved at {path}"]
        try:
            saved = torch.load(path, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a state that does not load weights-only is the finding
            return [_not_weights_only(exc)]
        return _state_problems(saved["loader"])

    def saved_consumed_samples(self, recipe: type, checkpoint: Path) -> Any:
        return None


def _state_problems(state: Any) -> list[str]:
    """A loader state must survive torch.save and torch.load(weights_only=True), as checkpoints load it, and stay
    under :data:`MAX_STATE_BYTES` (it is saved with every checkpoint)."""
    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
        buffer.seek(0)
        torch.load(buffer, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to round-trip is the finding
        return [_not_weights_only(exc)]
    size = buffer.getbuffer().nbytes
    if size > MAX_STATE_BYTES:
        return [(f"the loader's state is {size} bytes saved; keep it under {MAX_STATE_BYTES} (store positions, not "
                "sample lists)")]
    return []


def _not_weights_only(exc: Exception) -> str:
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    return (f"the loader's state_dict() does not survive torch.save and torch.load(weights_only=True): "
            f"{type(exc).__name__}: {first_line}; keep it to tensors and plain Python values (int(), not numpy "
            "scalars)")


#: The one instance suites use.
LOADER = LoaderBackend()
