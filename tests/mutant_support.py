"""What the mutant tests share: one test per mutant, named after it (names stay put when mutants are added), and the
assertion of a stop-and-go kill."""

from __future__ import annotations

import unittest
from collections.abc import Callable
from typing import Any

from conformance import StopAndGoConformance
from conformance.report import run_classes
from reference_models.mutants import Mutant


def mutant_test_name(function: Callable[..., Any], index: int, params: Any) -> str:
    """``parameterized`` name_func: ``test_killed_<mutant name>``."""
    return f"{function.__name__}_{params.args[0].name}"


def assert_stop_and_go_mutant_killed(test: unittest.TestCase, mutant: Mutant) -> None:
    """Every stop-and-go check ran once on ``mutant``'s class and the report is the intended kill."""
    report = run_classes([mutant.conformance_class])
    test.assertEqual(set(report.statuses()), set(StopAndGoConformance.check_names()), "every check ran once")
    test.assertEqual(mutant.problems(report), [])
