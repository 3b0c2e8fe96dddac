"""conformance: certify that a training/inference recipe resumes, predicts and reloads data exactly.

Adopters inherit a mixin first and ``unittest.TestCase`` second; importing this package adds no test.
"""

from conformance.compare import ComparisonError, ComparisonResult, Difference, Tolerance, assert_close
from conformance.determinism import deterministic_mode, enable_deterministic_mode
from conformance.errors import ConformanceSetupError, ElasticResumeRefused, PredictionReadError
from conformance.predictions.manifest import write_rank_manifest
from conformance.predictions.parquet_writer import ParquetPredictionWriter
from conformance.predictions.reader import PredictionSet, read_predictions
from conformance.predictions.writer import PredictionWriter
from conformance.runs.attached.run import AttachedRun
from conformance.runs.lightning.rng_callback import RNGStateCallback
from conformance.runs.loop.state import LoopRNGState, TrainingState
from conformance.suites.datamodule import DataModuleResumeConformance
from conformance.suites.prediction import PredictionWriterConformance
from conformance.suites.stop_and_go import StopAndGoConformance
from conformance.tolerance_profiles import TOLERANCE_PROFILES, ToleranceProfile
from conformance.training.data import ConsumedSamplesBatchSampler, ResumableDataModule
from conformance.training.rng import capture_rng_state, restore_rng_state

__all__ = [
    "TOLERANCE_PROFILES",
    "AttachedRun",
    "ComparisonError",
    "ComparisonResult",
    "ConformanceSetupError",
    "ConsumedSamplesBatchSampler",
    "DataModuleResumeConformance",
    "Difference",
    "ElasticResumeRefused",
    "LoopRNGState",
    "ParquetPredictionWriter",
    "PredictionReadError",
    "PredictionSet",
    "PredictionWriter",
    "PredictionWriterConformance",
    "RNGStateCallback",
    "ResumableDataModule",
    "StopAndGoConformance",
    "Tolerance",
    "ToleranceProfile",
    "TrainingState",
    "assert_close",
    "capture_rng_state",
    "deterministic_mode",
    "enable_deterministic_mode",
    "read_predictions",
    "restore_rng_state",
    "write_rank_manifest",
]
