"""``python -m conformance.runs.gpu_preflight``: the first command of ``tox -e gpu``. It exits 1 with one clear
message where the GPU environment cannot run (no CUDA, or a CPU-only torch), and prints what it found otherwise.

The GPU environment runs every suite with the kit's runs on ``accelerator="gpu"`` (``CONFORMANCE_ACCELERATOR``),
ranks joined by NCCL; a class with N ranks needs N visible GPUs.
"""

from __future__ import annotations

import os
import sys

import torch

__all__ = ["cuda_problem", "main"]


def cuda_problem() -> str | None:
    """Why this process cannot run the GPU environment; None when it can."""
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return (f"torch {torch.__version__} is a CPU-only build: `tox -e gpu` needs a CUDA build of torch on a "
                "machine with NVIDIA GPUs (run `tox -e cpu,nemo` here instead)")
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        return (f"torch {torch.__version__} sees no usable GPU{hint}: `tox -e gpu` "
                "needs an NVIDIA GPU and its driver (run `tox -e cpu,nemo` on machines without one)")
    return None


def main() -> int:
    """Print what the GPU environment will run on and return 0, or say why it cannot and return 1."""
    problem = cuda_problem()
    if problem is not None:
        print(f"tox -e gpu cannot run here: {problem}", file=sys.stderr)
        return 1
    names = [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
    print(f"tox -e gpu: torch {torch.__version__}, {len(names)} GPU(s): {', '.join(names)}; a class with N ranks "
          "needs N of them (the TP=2 prediction class runs two replicas: 4)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
