"""The reference recipes pass every stop-and-go check (the classes below are collected as tests as they are):
on one rank, on 2 DDP ranks (killed after the checkpoint, per-rank dropout) and resumed elastically 2 -> 1 and
1 -> 2 ranks."""

from reference_models.certify import (  # noqa: F401 - imported to be collected by unittest and pytest
    TestGPTElasticResumeOneToTwo,
    TestGPTElasticResumeTwoToOne,
    TestStepSeededGPTDDPStopAndGo,
    TestStepSeededGPTStopAndGo,
    TestTinyBERTStopAndGo,
    TestTinyGPTCleanStopAtEpochEnd,
    TestTinyGPTDDPStopAndGo,
    TestTinyGPTStopAndGo,
    TestTinyGPTValidatingEveryMicroBatch,
)
