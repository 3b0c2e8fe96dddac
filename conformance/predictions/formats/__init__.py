"""The registry of prediction file formats: the writers, the reader and the conformance checks find a format here.

A format is one module beside this one with a :class:`FileFormat` subclass (name, suffix, ``load``, ``verify``;
tensor-file formats also ``write_entries`` and ``load_tensors``) and a ``FORMAT`` instance, registered below.
``PredictionWriter(format=name)`` then writes it, :func:`conformance.read_predictions` reads it, and
``test_file_layout`` verifies it; nothing else chooses a format by its suffix.
"""

from __future__ import annotations

from pathlib import Path

from conformance.errors import PredictionReadError
from conformance.predictions.formats import parquet, pt, safetensors
from conformance.predictions.formats._base import METADATA_KEY, FileFormat, StoredPart, TensorFileFormat
from conformance.predictions.formats._tensors import TensorEntry, tensor_bytes, tensor_entry

__all__ = ["METADATA_KEY", "FileFormat", "StoredPart", "TensorEntry", "TensorFileFormat", "all_formats",
           "format_of", "load_part", "register", "tensor_bytes", "tensor_entry",
           "tensor_file_format"]

_FORMATS: dict[str, FileFormat] = {}


def register(file_format: FileFormat) -> None:
    """Make ``file_format`` known to the writers, the reader and the checks; names and suffixes are unique."""
    clash = [known.name for known in _FORMATS.values()
             if known.name == file_format.name or known.suffix == file_format.suffix]
    if clash:
        raise ValueError(f"format {file_format.name!r} ({file_format.suffix}) clashes with the registered {clash[0]!r}")
    _FORMATS[file_format.name] = file_format


def all_formats() -> list[FileFormat]:
    """Every registered format."""
    return list(_FORMATS.values())


def tensor_file_format(name: str) -> TensorFileFormat:
    """The tensor-file format called ``name`` (what :class:`PredictionWriter` writes)."""
    tensor_formats = {known.name: known for known in _FORMATS.values() if isinstance(known, TensorFileFormat)}
    if name not in tensor_formats:
        others = [known for known in _FORMATS if known not in tensor_formats]
        raise ValueError(f"format={name!r}; choose one of {', '.join(tensor_formats)} (written file by file; "
                         f"{', '.join(others)} files have a writer of their own)")
    return tensor_formats[name]


def format_of(path: Path | str) -> FileFormat | None:
    """The format of a file (or file name), by its suffix; None for a file of no registered format."""
    name = path.name if isinstance(path, Path) else path
    return next((known for known in _FORMATS.values() if name.endswith(known.suffix)), None)


def load_part(path: Path) -> list[StoredPart]:
    """The rows of one data file (one part per parquet row group); :class:`PredictionReadError` for any problem."""
    file_format = format_of(path)
    if file_format is None:
        raise PredictionReadError(f"{path} is of no known prediction format ({', '.join(_FORMATS)})")
    try:
        return file_format.load(path)
    except PredictionReadError:
        raise
    except Exception as exc:
        raise PredictionReadError(f"cannot read {path}: {type(exc).__name__}: {exc} (a truncated or foreign file; "
                                  "the kit's writers never leave partial files)") from exc


for _format in (pt.FORMAT, safetensors.FORMAT, parquet.FORMAT):
    register(_format)
