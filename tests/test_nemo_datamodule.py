"""NeMo's MegatronDataSampler under DataModuleResumeConformance, on plain Lightning and under NeMo's
MegatronStrategy; runs where nemo-toolkit 2.7 is installed."""

import unittest

try:
    import nemo.lightning  # noqa: F401
except ImportError as missing:
    raise unittest.SkipTest(f"nemo-toolkit 2.7 is not installed ({missing}); run `python3 -m tox -e nemo`") from None

from reference_models.nemo_data import (  # noqa: F401 - collected as tests
    TestNeMoSamplerDataModuleResume,
    TestNeMoSamplerDataModuleUnderMegatronStrategy,
)
