"""The attached backend's reference trainer passes every applicable stop-and-go check (collected as they are):
crashed on one rank, stopped cleanly at an epoch end, and killed on two DDP ranks."""

from reference_models.certify_attached import (  # noqa: F401 - imported to be collected by unittest and pytest
    TestAttachedTrainerCleanStop,
    TestAttachedTrainerStopAndGo,
    TestAttachedTrainerTwoRanksKilled,
)
