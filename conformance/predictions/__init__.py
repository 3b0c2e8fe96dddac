"""Prediction writing and reading: the streaming writers, the reader, file names, collation, spill, atomic files
and which ranks write; file formats live in :mod:`conformance.predictions.formats`."""
