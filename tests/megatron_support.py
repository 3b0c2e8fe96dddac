"""Skip tests, saying why, where megatron-core or NeMo 2 is not installed (``tox -e nemo`` has both)."""

import importlib.util
import unittest

HAS_MEGATRON = importlib.util.find_spec("megatron") is not None and importlib.util.find_spec("megatron.core") is not None
MISSING = "megatron-core is not installed here; `python3 -m tox -e nemo` runs these"


def require_megatron() -> None:
    """Raise unittest.SkipTest (skipping the calling test module) unless megatron-core can be imported."""
    if not HAS_MEGATRON:
        raise unittest.SkipTest(MISSING)

HAS_NEMO = HAS_MEGATRON and importlib.util.find_spec("nemo") is not None \
    and importlib.util.find_spec("nemo.lightning") is not None
NEMO_MISSING = "nemo-toolkit 2.7 is not installed here; `python3 -m tox -e nemo` runs these"


def require_nemo() -> None:
    """Raise unittest.SkipTest (skipping the calling test module) unless NeMo 2 and megatron-core can be imported."""
    if not HAS_NEMO:
        raise unittest.SkipTest(NEMO_MISSING)
