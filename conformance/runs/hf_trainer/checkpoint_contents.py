"""What a Hugging Face Trainer checkpoint (a ``checkpoint-<step>`` folder) must hold, checked against the records of
the run that wrote it: the model's weights (``model.safetensors``), every optimizer moment (``optimizer.pt``), the
LR scheduler's position (``scheduler.pt``), the global step (``trainer_state.json``) and the RNG states
(``rng_state.pth``), every file read without unpickling arbitrary objects."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers.trainer_pt_utils import safe_globals

from conformance.runs.backend import CheckpointUnreadable
from conformance.runs.loop.checkpoint_contents import checkpoint_problems, leaves
from conformance.training.recordstore import RecordStore

__all__ = ["trainer_checkpoint_problems"]

#: The files of one checkpoint the kit reads.
_WEIGHTS, _OPTIMIZER, _SCHEDULER, _STATE, _RNG = ("model.safetensors", "optimizer.pt", "scheduler.pt",
                                                  "trainer_state.json", "rng_state.pth")


def trainer_checkpoint_problems(folder: Path, records: Sequence[RecordStore], stop_step: int
                                ) -> tuple[str, list[str]]:
    """(what was verified, every problem) of the checkpoint ``folder``, written after ``stop_step`` by a run that
    recorded ``records``; raises :class:`CheckpointUnreadable` when a file cannot be read safely."""
    values: dict[str, Any] = {}
    problems = []
    for name, read in ((_WEIGHTS, load_file), (_OPTIMIZER, _torch_file), (_SCHEDULER, _torch_file),
                       (_STATE, _json_file), (_RNG, _rng_file)):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is not in it: the Trainer saves it with every checkpoint unless the recipe's "
                            "Trainer subclass changes _save_checkpoint")
            continue
        try:
            values.update(leaves(read(path), prefix=f"{path.stem}."))
        except Exception as exc:
            raise CheckpointUnreadable(f"{name} in {folder.name} cannot be read safely: {type(exc).__name__}: "
                                       f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    problems += checkpoint_problems(values, records, stop_step, step_key="global_step")
    return f"Trainer checkpoint {folder.name}: {len(values)} values verified", problems


def _torch_file(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def _json_file(path: Path) -> Any:
    return json.loads(path.read_text())


def _rng_file(path: Path) -> Any:
    """The Trainer's RNG file, read weights-only with the numpy types the Trainer itself allows when it loads it."""
    with safe_globals():
        return torch.load(path, map_location="cpu", weights_only=True)
