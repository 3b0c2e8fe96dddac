"""What the suites need to know about the objects under test, declared once and read once per class.

Checks never probe a writer or a data module with ``hasattr``/``getattr`` themselves: a suite reads the
capabilities below from a freshly built object in ``prepare`` and its checks consult the result. Each field says
what an adopter's object declares, and what it changes in the verdicts. (What data under
DataModuleResumeConformance declares depends on its backend: :class:`conformance.runs.data_probe.DataCapabilities`.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conformance.predictions.collate import CollationDims

__all__ = ["WriterCapabilities"]


@dataclass(frozen=True)
class WriterCapabilities:
    """A prediction writer, as PredictionWriterConformance sees it."""

    #: The writer's class, for messages.
    name: str
    #: ``writer.replace(write_interval=..., files_per_subdir=...)`` returns a copy with those settings changed.
    #: Turns on ``test_batch_and_epoch_intervals_agree`` and ``test_files_per_subdir`` (skipped otherwise).
    replaces_settings: bool
    #: ``writer.dims``: which dim of each key is the batch dim and the sequence dim, used to line up in-memory
    #: predictions with what was read back (default: :class:`CollationDims`'s defaults).
    dims: CollationDims
    #: ``writer.supports_resume``: re-running a crashed job into the same folder completes it without predicting
    #: finished batches again. False skips ``test_resume_after_crash``; True or undeclared (None) is checked.
    supports_resume: bool | None

    @classmethod
    def of(cls, writer: Any) -> WriterCapabilities:
        """Read the capabilities of ``writer``."""
        dims = getattr(writer, "dims", None)
        resumes = getattr(writer, "supports_resume", None)
        return cls(type(writer).__qualname__, callable(getattr(writer, "replace", None)),
                   dims if isinstance(dims, CollationDims) else CollationDims(), None if resumes is None else bool(resumes))
