"""The Hugging Face Trainer backend's tests need transformers >= 5 (the cpu environment's ``hf`` extra); the nemo
environment has transformers 4, pinned through NeMo 2.7, where these test modules are skipped with the reason."""

from __future__ import annotations

import unittest

from conformance.runs.hf_trainer.backend import transformers_problem

__all__ = ["require_transformers"]


def require_transformers() -> None:
    """Skip the calling test module (raise at its import) where the backend cannot run."""
    problem = transformers_problem()
    if problem is not None:
        raise unittest.SkipTest(problem)
