"""The reference stateful loaders under DataModuleResumeConformance's loader backend, certified by ``python -m
conformance certify reference_models.certify_loader`` (the classes live beside their loaders, at module level)."""

from reference_models.stateful_loader import TestStatefulLoaderResume, TestStatefulStreamResume

__all__ = ["TestStatefulLoaderResume", "TestStatefulStreamResume"]
