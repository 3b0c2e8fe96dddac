"""The kit's own exceptions: a conformance class set up wrongly, and a prediction folder that cannot be read."""

from __future__ import annotations

__all__ = ["ConformanceSetupError", "ElasticResumeRefused", "PredictionReadError"]


class ConformanceSetupError(TypeError):
    """A conformance class is set up wrongly (missing hook, unknown check name, inconsistent settings)."""


class PredictionReadError(ValueError):
    """A prediction folder is incomplete, inconsistent or holds unreadable files."""


class ElasticResumeRefused(ValueError):
    """A data module refuses to resume a checkpoint saved on another number of data-parallel ranks.

    The one refusal ``test_elastic_resume`` accepts from a data module declaring ``supports_elastic_resume = False``;
    raise it (or a subclass) from ``load_state_dict`` or the train dataloader.
    """
