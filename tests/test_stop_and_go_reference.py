"""The reference recipes pass every stop-and-go check (the classes below are collected as tests as they are)."""

from reference_models.certify import (  # noqa: F401 - imported to be collected by unittest and pytest
    TestStepSeededGPTStopAndGo,
    TestTinyBERTStopAndGo,
    TestTinyGPTCleanStopAtEpochEnd,
    TestTinyGPTStopAndGo,
    TestTinyGPTValidatingEveryMicroBatch,
)
