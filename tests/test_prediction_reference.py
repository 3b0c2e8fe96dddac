"""The kit's writers under PredictionWriterConformance (the classes below are collected as tests)."""

from reference_models.certify import (  # noqa: F401 - collected by unittest and pytest
    TestTinyGPTParquetPredictionWriter,
    TestTinyGPTPredictionWriter,
    TestTinyGPTSafetensorsPredictionWriter,
)
