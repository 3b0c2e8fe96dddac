"""Skip tests, saying why, where megatron-core is not installed (``tox -e nemo`` has it)."""

import importlib.util
import unittest

HAS_MEGATRON = importlib.util.find_spec("megatron") is not None and importlib.util.find_spec("megatron.core") is not None
MISSING = "megatron-core is not installed here; `python3 -m tox -e nemo` runs these"


def require_megatron() -> None:
    """Raise unittest.SkipTest (skipping the calling test module) unless megatron-core can be imported."""
    if not HAS_MEGATRON:
        raise unittest.SkipTest(MISSING)
