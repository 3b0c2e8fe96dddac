"""Which backend of DataModuleResumeConformance draws a recipe's data, chosen once per class from its hooks."""

from __future__ import annotations

import inspect

from conformance.runs.data_probe import DataBackend

__all__ = ["data_backend_for"]


def data_backend_for(recipe: type) -> DataBackend:
    """The loader backend for a recipe defining ``make_loader`` (the kit iterates its stateful loader), otherwise
    the Lightning backend (``make_datamodule``, probed through real fits)."""
    if inspect.getattr_static(recipe, "make_loader", None) is not None:
        from conformance.runs.loader.backend import LOADER

        return LOADER
    from conformance.runs.lightning.data_backend import LIGHTNING_DATA

    return LIGHTNING_DATA
