"""The kit's own exceptions: a conformance class set up wrongly, and a prediction folder that cannot be read."""

from __future__ import annotations

__all__ = ["ConformanceSetupError", "PredictionReadError"]


class ConformanceSetupError(TypeError):
    """A conformance class is set up wrongly (missing hook, unknown check name, inconsistent settings)."""


class PredictionReadError(ValueError):
    """A prediction folder is incomplete, inconsistent or holds unreadable files."""
