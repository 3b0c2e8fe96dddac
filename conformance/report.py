"""Run conformance classes with unittest and turn the outcome into a report: text, JSON and JUnit XML.

Used by ``python -m conformance certify`` and by the kit's own tests (to prove that broken recipes fail).
"""

from __future__ import annotations

import json
import time
import unittest
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO
from xml.etree import ElementTree

from conformance.compare import LeafStat
from conformance.suites._assertions import NOT_APPLICABLE as NOT_APPLICABLE_REASON
from conformance.suites._expected_failures import UnexpectedSuccess

__all__ = ["CheckOutcome", "Report", "run_classes"]

PASSED, FAILED, ERROR = "passed", "failed", "error"
EXPECTED_FAILURE, UNEXPECTED_SUCCESS, SKIPPED = "expected failure", "unexpected success", "skipped"
NOT_APPLICABLE = "not applicable"
_BAD = frozenset({FAILED, ERROR, UNEXPECTED_SUCCESS})
_MARKS = {PASSED: "ok", FAILED: "FAIL", ERROR: "ERROR", EXPECTED_FAILURE: "xfail",
          UNEXPECTED_SUCCESS: "XPASS", SKIPPED: "skip", NOT_APPLICABLE: "n/a"}


@dataclass
class CheckOutcome:
    """One check of one conformance class: its status, failure message and what it measured."""

    suite: str
    check: str
    status: str
    message: str = ""
    seconds: float = 0.0
    worst: LeafStat | None = None
    summary: str = ""
    reason: str | None = None
    #: For a failed check: the root cause of its suite's failures, and whether this check is where it shows first.
    cause: str = ""
    is_root: bool = False
    #: What the class's runs are when not what they say (e.g. "NeMo strategy on CPU emulation"), else "".
    environment: str = ""
    #: The backend that ran the class's recipe ("Lightning", "PyTorch loop", ...), else "".
    backend: str = ""
    #: What the verdict was reached under (the tolerance profile, deterministic mode), else "".
    conditions: str = ""

    def describe_worst(self) -> str:
        """The largest difference seen against its tolerance, in one phrase."""
        worst = self.worst
        if worst is None:
            return self.summary
        if worst.usage == 0:
            return f"{self.summary}, all identical"
        return (f"max |diff| {worst.max_abs_diff:.3g} at {worst.path} = {100 * worst.usage:.3g}% of tolerance "
                f"(atol {worst.tolerance.atol:g}, rtol {worst.tolerance.rtol:g})")


@dataclass
class Report:
    """Every check outcome of a run of conformance classes."""

    outcomes: list[CheckOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No check failed, errored or passed unexpectedly, and at least one check ran."""
        return bool(self.outcomes) and not any(outcome.status in _BAD for outcome in self.outcomes)

    def statuses(self, suite: str | None = None) -> dict[str, str]:
        """``{check: status}``, for one suite class when given."""
        return {o.check: o.status for o in self.outcomes if suite is None or o.suite == suite}

    def outcome(self, suite: str, check: str) -> CheckOutcome:
        """The outcome of ``check`` in ``suite``."""
        for outcome in self.outcomes:
            if (outcome.suite, outcome.check) == (suite, check):
                return outcome
        raise KeyError(f"no outcome for {suite}.{check}")

    def format_text(self) -> str:
        """A table per suite class and a closing count line."""
        lines = []
        for suite in dict.fromkeys(outcome.suite for outcome in self.outcomes):
            environment = next((o.environment for o in self.outcomes if o.suite == suite and o.environment), "")
            lines.append(f"{suite} [{environment}]" if environment else suite)
            for label in ("backend", "conditions"):
                value = next((getattr(o, label) for o in self.outcomes if o.suite == suite and getattr(o, label)), "")
                if value:
                    lines.append(f"  {label}: {value}")
            causes = [o for o in self.outcomes if o.suite == suite and o.status in _BAD and o.cause]
            if causes:
                root = next((o for o in causes if o.is_root), causes[0])
                others = sorted({o.check for o in causes} - {root.check})
                lines.append(f"  root cause: {root.cause}" + (f"; {', '.join(others)} fail as its consequence"
                                                                if others else ""))
            for outcome in (o for o in self.outcomes if o.suite == suite):
                detail = outcome.describe_worst()
                if outcome.status == EXPECTED_FAILURE:
                    detail = f"expected: {outcome.reason}"
                elif outcome.status in (SKIPPED, NOT_APPLICABLE):
                    detail = outcome.message
                elif outcome.status in _BAD:
                    detail = outcome.message.splitlines()[0] if outcome.message else detail
                lines.append(f"  {_MARKS[outcome.status]:<6} {outcome.check:<32} {detail}")
        failures = sorted((o for o in self.outcomes if o.status in _BAD), key=lambda o: not o.is_root)
        if failures:
            lines.append("")
            lines.append("Details of what failed:")
            for outcome in failures:
                lines.append(f"--- {outcome.suite}.{outcome.check} ({outcome.status})")
                lines.extend("  " + line for line in outcome.message.splitlines())
        counts = {status: sum(o.status == status for o in self.outcomes) for status in _MARKS}
        lines.append(", ".join(f"{count} {status}" for status, count in counts.items() if count) or "no checks ran")
        return "\n".join(lines)

    def write_json(self, path: Path) -> None:
        """All outcomes as JSON (tolerance usage included)."""
        rows = [{**asdict(outcome), "worst": asdict(outcome.worst) if outcome.worst else None}
                for outcome in self.outcomes]
        path.write_text(json.dumps({"ok": self.ok, "checks": rows}, indent=2, default=str))

    def write_junit(self, path: Path) -> None:
        """JUnit XML; expected failures are written as skipped with their reason, as pytest does for xfail."""
        root = ElementTree.Element("testsuites")
        for suite in dict.fromkeys(outcome.suite for outcome in self.outcomes):
            mine = [o for o in self.outcomes if o.suite == suite]
            element = ElementTree.SubElement(
                root, "testsuite", name=suite, tests=str(len(mine)),
                failures=str(sum(o.status in (FAILED, UNEXPECTED_SUCCESS) for o in mine)),
                errors=str(sum(o.status == ERROR for o in mine)),
                skipped=str(sum(o.status in (EXPECTED_FAILURE, SKIPPED, NOT_APPLICABLE) for o in mine)),
            )
            labels = {label: next((getattr(o, label) for o in mine if getattr(o, label)), "")
                      for label in ("backend", "environment", "conditions")}
            if any(labels.values()):
                properties = ElementTree.SubElement(element, "properties")
                for name, value in labels.items():
                    if value:
                        ElementTree.SubElement(properties, "property", name=name, value=value)
            for outcome in mine:
                case = ElementTree.SubElement(element, "testcase", classname=suite, name=outcome.check,
                                              time=f"{outcome.seconds:.3f}")
                _junit_status(case, outcome)
        ElementTree.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _junit_status(case: ElementTree.Element, outcome: CheckOutcome) -> None:
    first_line = outcome.message.splitlines()[0] if outcome.message else outcome.status
    if outcome.status in (FAILED, UNEXPECTED_SUCCESS):
        ElementTree.SubElement(case, "failure", message=first_line).text = outcome.message
    elif outcome.status == ERROR:
        ElementTree.SubElement(case, "error", message=first_line).text = outcome.message
    elif outcome.status == EXPECTED_FAILURE:
        ElementTree.SubElement(case, "skipped", type="expected failure", message=outcome.reason or "")
    elif outcome.status == SKIPPED:
        ElementTree.SubElement(case, "skipped", message=outcome.message)
    elif outcome.status == NOT_APPLICABLE:
        ElementTree.SubElement(case, "skipped", type="not applicable", message=outcome.message)
    if outcome.status in (PASSED, EXPECTED_FAILURE):
        ElementTree.SubElement(case, "system-out").text = outcome.describe_worst()


class _CollectingResult(unittest.TestResult):
    """A TestResult that keeps one :class:`CheckOutcome` per test and prints a line per check if asked."""

    def __init__(self, echo: TextIO | None) -> None:
        super().__init__()
        self.echo = echo
        self.outcomes: list[CheckOutcome] = []
        self._started = 0.0

    def startTest(self, test: unittest.TestCase) -> None:
        super().startTest(test)
        self._started = time.perf_counter()

    def _add(self, test: Any, status: str, message: str = "") -> None:
        suite, check = _names(test)
        cls = type(test)
        detail = getattr(cls, "check_details", {}).get(check)
        reason = getattr(cls, "expected_failures", {}).get(check) if isinstance(test, unittest.TestCase) else None
        outcome = CheckOutcome(suite, check, status, message, time.perf_counter() - self._started,
                               detail.worst if detail else None, detail.summary if detail else "", reason,
                               detail.cause if detail else "", detail.is_root if detail else False,
                               getattr(cls, "run_environment", None) or "", getattr(cls, "run_backend", None) or "",
                               getattr(cls, "run_conditions", None) or "")
        self.outcomes.append(outcome)
        if self.echo is not None:
            shown = outcome.message.splitlines()[0] if status in _BAD and outcome.message else ""
            print(f"  {_MARKS[status]:<6} {check} {shown}".rstrip(), file=self.echo, flush=True)

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self._add(test, PASSED)

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self._add(test, UNEXPECTED_SUCCESS if isinstance(err[1], UnexpectedSuccess) else FAILED, str(err[1]))

    def addError(self, test: Any, err: Any) -> None:
        super().addError(test, err)
        self._add(test, ERROR, self._exc_info_to_string(err, test))

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._add(test, EXPECTED_FAILURE, str(err[1]))

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        if reason.startswith(NOT_APPLICABLE_REASON):
            self._add(test, NOT_APPLICABLE, reason.removeprefix(NOT_APPLICABLE_REASON))
        else:
            self._add(test, SKIPPED, reason)


def _names(test: Any) -> tuple[str, str]:
    if isinstance(test, unittest.TestCase):
        return type(test).__qualname__, test._testMethodName
    # a set-up error of a whole class: unittest passes an _ErrorHolder described as "setUpClass (module.Class)"
    description = str(test)
    hook, _, where = description.partition(" ")
    return where.strip("()").rsplit(".", 1)[-1], hook


def run_classes(classes: Iterable[type[unittest.TestCase]], *, echo: TextIO | None = None,
                checks: Iterable[str] | None = None) -> Report:
    """Run the checks (all, or those named in ``checks``) of ``classes`` and collect a :class:`Report`."""
    result = _CollectingResult(echo)
    loader = unittest.TestLoader()
    for cls in classes:
        if echo is not None:
            print(f"== {cls.__qualname__}", file=echo, flush=True)
        tests = loader.loadTestsFromTestCase(cls) if checks is None else [cls(name) for name in checks]
        unittest.TestSuite(tests).run(result)
    return Report(result.outcomes)

