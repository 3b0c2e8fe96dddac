"""Skip a test module, saying why, where megatron-core is not installed (``tox -e nemo`` has it)."""

import importlib.util
import unittest


def require_megatron() -> None:
    """Raise unittest.SkipTest unless megatron-core can be imported."""
    if importlib.util.find_spec("megatron") is None or importlib.util.find_spec("megatron.core") is None:
        raise unittest.SkipTest("megatron-core is not installed here; `python3 -m tox -e nemo` runs these")
