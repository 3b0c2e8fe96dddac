"""The assertion helpers every suite's checks use, and their one failure-message format.

A failure message starts with the check's name and a headline, followed either by one ``  - problem`` line per
problem (at most :data:`MAX_PROBLEMS`, then how many more) or by indented detail::

    test_checkpoint_state: 2 problem(s)
      - mid_epoch: no data-module state in the checkpoint (...)
      - first_step: ...

A check names itself from the running test method, so a message can never carry another check's name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, NoReturn, Protocol

from conformance._text import indent
from conformance.compare import LeafStat

__all__ = ["ERROR_TAIL_LINES", "MAX_PROBLEMS", "NOT_APPLICABLE", "CheckAssertions", "CheckDetail", "RankResult", "error_tail", "rank_errors",
           "run_failures"]

#: How a check's skip reason starts when its fact does not exist for the recipe's backend: reports show it as
#: "not applicable", never as a pass.
NOT_APPLICABLE = "not applicable: "

#: A failure lists at most this many problems, then says how many more there are.
MAX_PROBLEMS = 20


@dataclass
class CheckDetail:
    """What a check measured, for reports: the leaf that came closest to its tolerance, a summary line, and when it
    failed, the root cause of its suite's failures and whether this check is where it shows first."""

    worst: LeafStat | None = None
    summary: str = ""
    cause: str = ""
    is_root: bool = False


class RankResult(Protocol):
    """One rank of a run, as the checks see it: its rank, the error that ended it, if any, and when (wall clock)."""

    rank: int
    error: str | None
    failed_at: float | None


#: A failed rank's message shows at most this many lines of its error (the exception, then the traceback's end).
ERROR_TAIL_LINES = 12


def run_failures(run: str, results: Iterable[RankResult]) -> list[str]:
    """One problem per failed rank of run ``run``: its exception, then the end of its traceback or output; the rank
    that failed first comes first, and later failures say they came after it (usually its consequence: a peer
    waiting in a collective sees the connection close)."""
    return [f"the {run} run failed on rank {rank}: {error_tail(error)}" for rank, error in rank_errors(results)]


def rank_errors(results: Iterable[RankResult]) -> list[tuple[int, str]]:
    """(rank, error) of every failed rank, the first to fail first; later ones prefixed with which rank failed
    before them. Ranks that did not report when they failed (killed, no log) come last, as they are."""
    failed = [result for result in results if result.error]
    timed = sorted((result for result in failed if getattr(result, "failed_at", None) is not None),
                   key=lambda result: result.failed_at)
    errors = [(result.rank, result.error) for result in timed[:1]]
    errors += [(result.rank, f"after rank {timed[0].rank} had failed: {result.error}") for result in timed[1:]]
    return errors + [(result.rank, result.error) for result in failed if result not in timed]


def error_tail(error: str) -> str:
    """The first line of ``error`` and, indented below it, its last :data:`ERROR_TAIL_LINES` lines."""
    first, *rest = error.strip().splitlines() or [""]
    tail = rest[-ERROR_TAIL_LINES:]
    skipped = len(rest) - len(tail)
    return "\n".join([first or "(no message)", *([f"    ... {skipped} lines ..."] if skipped else []),
                      *(f"    {line}" for line in tail)])


class CheckAssertions:
    """Mixed into every suite: how a check fails, concludes and notes what it measured."""

    #: Filled in during the run of a class: ``{check_name: CheckDetail}``.
    check_details: ClassVar[dict[str, CheckDetail]]
    #: What the class's runs are, when not what they say (e.g. "NeMo strategy on CPU emulation"); set at class
    #: set-up, named in every failure message and report.
    run_environment: ClassVar[str | None] = None
    #: Which backend ran the class's recipe ("Lightning", "PyTorch loop", ...), set at class set-up, for reports.
    run_backend: ClassVar[str | None] = None
    #: What the class's verdicts are reached under (tolerance profile, deterministic mode), for reports.
    run_conditions: ClassVar[str | None] = None
    _testMethodName: str  # set by unittest.TestCase

    @property
    def check_name(self) -> str:
        """The name of the running check (its test method)."""
        return self._testMethodName

    def fail_check(self, headline: str, problems: Sequence[str] = (), *, detail: str = "") -> NoReturn:
        """Fail the running check with ``headline``, then ``problems`` as a list or ``detail`` indented."""
        lines = [f"{self.check_name}: {headline}"]
        lines += [f"  - {problem}" for problem in problems[:MAX_PROBLEMS]]
        if len(problems) > MAX_PROBLEMS:
            lines.append(f"  ... and {len(problems) - MAX_PROBLEMS} more")
        if detail:
            lines.append(indent(detail))
        self.raise_failure(lines)

    def raise_failure(self, lines: Sequence[str]) -> NoReturn:
        """Fail the running check with ``lines`` (headline first); the class's run environment, if it is not what
        it says, follows the headline."""
        headline, *rest = lines
        environment = [f"  (runs: {self.run_environment})"] if self.run_environment else []
        raise AssertionError("\n".join([headline, *environment, *rest]))

    def conclude(self, problems: Sequence[str], summary: str) -> None:
        """Fail listing ``problems`` if there are any; otherwise note ``summary`` for the report."""
        self.note_detail(None, summary if not problems else f"{len(problems)} problem(s)")
        if problems:
            self.fail_check(f"{len(problems)} problem(s)", problems)

    def require_succeeded(self, run: str, results: Iterable[RankResult]) -> None:
        """Fail the check, showing every failed rank's error, unless each rank of run ``run`` succeeded."""
        failed = rank_errors(results)
        if failed:
            self.fail_check(f"the {run} run failed, so nothing can be certified",
                            detail="\n".join(f"rank {rank}: {error_tail(error)}" for rank, error in failed))

    def note_detail(self, worst: LeafStat | None, summary: str) -> None:
        """Remember what the running check measured, for the report of the ``certify`` command."""
        type(self).check_details[self.check_name] = CheckDetail(worst, summary)

    def note_cause(self, cause: str, *, is_root: bool) -> None:
        """Remember the root cause of the suite's failures for the running (failing) check."""
        detail = type(self).check_details.setdefault(self.check_name, CheckDetail())
        detail.cause, detail.is_root = cause, is_root


