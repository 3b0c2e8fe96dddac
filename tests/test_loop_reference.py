"""The loop backend's reference recipes pass every applicable stop-and-go check (collected as they are): one rank
crashing mid-epoch, one rank stopping cleanly at an epoch end, two DDP ranks killed after the checkpoint, and
Lightning Fabric checkpointing through fabric.save/fabric.load."""

from reference_models.certify_loop import (  # noqa: F401 - imported to be collected by unittest and pytest
    TestFabricGPTStopAndGo,
    TestGPTLoopCleanStopAtEpochEnd,
    TestGPTLoopDDPStopAndGo,
    TestGPTLoopStopAndGo,
)
