"""The mutant framework: a deliberately broken recipe, the checks it must make fail (each with a phrase the failure
message must contain: the right reason, not just any failure) and the checks that may fail as a consequence.

It knows no suite: the catalogues live beside it, one module per suite (:mod:`.stop_and_go`, :mod:`.datamodule`,
:mod:`.prediction`), and ``python -m reference_models.mutants`` prints their kill tables.
"""

from __future__ import annotations

import sys
import unittest
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conformance.report import Report, run_classes

__all__ = ["Mutant", "kill_table", "mutant_class"]


@dataclass(frozen=True)
class Mutant:
    """A broken recipe and what the kit must say about it."""

    name: str
    bug: str
    #: The conformance test class of the broken recipe, named ``Mutant_<name>``; defined at module level where
    #: checks import it in other processes.
    conformance_class: type[unittest.TestCase]
    kills: dict[str, str]
    may_also_fail: frozenset[str] = frozenset()
    #: Checks that do not apply to this recipe and skip (or report "not applicable"), saying why.
    skips: frozenset[str] = frozenset()
    #: Why the bug is no bug in the current process (None when it is one), e.g. a library has changed a default.
    harmless_here: Callable[[], str | None] = lambda: None

    def problems(self, report: Report) -> list[str]:
        """Why ``report`` (of :attr:`conformance_class`) is not the intended kill; empty when it is."""
        statuses = report.statuses()
        problems = []
        for check, phrase in self.kills.items():
            if check not in statuses:
                problems.append(f"{check} did not run: {report.format_text()[:300]}")
                continue
            outcome = report.outcome(self.conformance_class.__qualname__, check)
            if outcome.status != "failed":
                problems.append(f"{check} should fail but is {outcome.status}")
            elif phrase not in outcome.message:
                problems.append(f"{check} failed without saying {phrase!r}: {outcome.message[:300]}")
        failed = {check for check, status in statuses.items() if status == "failed"}
        unexplained = sorted(failed - set(self.kills) - self.may_also_fail)
        if unexplained:
            problems.append(f"checks this bug should not touch failed too: {', '.join(unexplained)}")
        broken = sorted(check for check, status in statuses.items() if status not in ("passed", "failed")
                        and not (status in ("skipped", "not applicable") and check in self.skips))
        if broken:
            problems.append(f"checks neither passed nor failed: {', '.join(broken)}")
        return problems


def mutant_class(name: str, base: type, suite: type, module: str, **hooks: Any) -> type[unittest.TestCase]:
    """The conformance class ``Mutant_<name>`` of ``suite``: ``base`` with some hooks (callables become
    classmethods), classes or settings replaced, defined in ``module`` under its name, since its runs' fresh
    processes import it by name."""
    wrapped = {key: classmethod(value) if callable(value) and not isinstance(value, type) else value
               for key, value in hooks.items()}
    recipe = type(f"{name}Recipe", (base,), wrapped)
    conformance_class = type(f"Mutant_{name}", (recipe, suite, unittest.TestCase),
                             {"__module__": module, "__qualname__": f"Mutant_{name}"})
    setattr(sys.modules[module], conformance_class.__qualname__, conformance_class)
    return conformance_class


def kill_table(mutants: tuple[Mutant, ...], suite: type, *, coverage: bool = True) -> str:
    """Run every mutant and tabulate which intended checks failed; ends with the kill rate and, for a suite's
    whole catalogue (``coverage``), how many of its checks have an intended mutant."""
    lines, killed = [], 0
    for mutant in mutants:
        if mutant.harmless_here():
            lines.append(f"{'n/a':<9} {mutant.name:<32} {mutant.harmless_here()}")
            continue
        report = run_classes([mutant.conformance_class])
        problems = mutant.problems(report)
        killed += not problems
        failing = sum(status == "failed" for status in report.statuses().values())
        lines.append(f"{'killed' if not problems else 'SURVIVED':<9} {mutant.name:<32} "
                     f"intended: {', '.join(mutant.kills)}; failing in all: {failing}")
        lines.extend(f"          {problem}" for problem in problems)
    lines.append(f"kill rate: {killed}/{len(mutants)}")
    if not coverage:
        return "\n".join(lines)
    covered = {check for mutant in mutants for check in mutant.kills}
    uncovered = sorted(set(suite.check_names()) - covered)
    lines.append(f"checks of {suite.__name__} with an intended mutant: {len(covered)}/{len(suite.check_names())}"
                 + (f"; without: {', '.join(uncovered)}" if uncovered else ""))
    return "\n".join(lines)
