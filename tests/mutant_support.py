"""What the mutant tests share: one test per mutant, named after it (names stay put when mutants are added)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def mutant_test_name(function: Callable[..., Any], index: int, params: Any) -> str:
    """``parameterized`` name_func: ``test_killed_<mutant name>``."""
    return f"{function.__name__}_{params.args[0].name}"
