"""RNG state capture/restore: python, numpy, torch CPU and CUDA, and Megatron-core's model-parallel tracker when one
is installed.

States are plain Python values and tensors, never numpy arrays, so a checkpoint holding them loads with
``torch.load(weights_only=True)`` (Lightning 2.6's default).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from conformance.training.megatron_rng import set_tracker_states, tracker_states

__all__ = ["capture_rng_state", "restore_rng_state", "seed_everything"]


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG state of this process, as weights-only-loadable values."""
    version, internal, gauss_next = random.getstate()
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    model_parallel = tracker_states()
    if model_parallel is not None:
        state["model_parallel"] = model_parallel
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set every global RNG of this process to ``state`` as returned by :func:`capture_rng_state`."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"].tolist()), python["gauss_next"]))
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["kind"], keys, numpy["position"], numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        if not torch.cuda.is_available() or torch.cuda.device_count() != len(state["cuda"]):
            raise RuntimeError(
                f"the RNG state holds {len(state['cuda'])} CUDA generator(s) but this process sees "
                f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} CUDA device(s); "
                "resume on the same number of visible devices"
            )
        torch.cuda.set_rng_state_all(state["cuda"])
    if "model_parallel" in state:
        set_tracker_states(state["model_parallel"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (every device) with ``seed``, as a training script starts."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
