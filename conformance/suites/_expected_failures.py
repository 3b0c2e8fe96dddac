"""``expected_failures = {check: reason}``: how an adopter's class marks checks that are known to fail.

The marking gives the adopter's class its own copy of each listed check (the suite mixin's function is never
touched) and relies on three details of ``unittest``, which pytest's unittest support shares because it runs
``TestCase.run`` itself:

- ``TestCase.run`` reads ``__unittest_expecting_failure__`` from the test method (as ``@unittest.expectedFailure``
  sets it): a failure then counts as an expected failure.
- An expected-failure test that raises *any* exception counts as an expected failure, and one that passes as a
  bare "unexpected success" with no message. So the copy clears ``self._outcome.expecting_failure`` (``_outcome``
  is the ``unittest.case._Outcome`` of the running test; Python 3.4+) when the check crashes, which stays an
  error, and when it passes, raising :class:`UnexpectedSuccess`: every runner then shows a failure that says to
  remove the entry from ``expected_failures``, and the certify report counts it as an unexpected success.
- The reason is kept on the copy as ``expected_failure_reason``, so reports can show it.

``tests/test_expected_failures.py`` pins this behaviour under both runners.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["UnexpectedSuccess", "mark_expected_failures"]


class UnexpectedSuccess(AssertionError):
    """A check listed in ``expected_failures`` passed: the entry is stale."""


def mark_expected_failures(cls: type, checks: Mapping[str, Callable[..., None]],
                           expected: Mapping[str, str]) -> None:
    """Give ``cls`` a marked copy of every check in ``expected`` and the plain check back for every other one."""
    for name in checks:
        current = getattr(cls, name)
        check = getattr(current, "__wrapped__", current) if _is_marked(current) else current
        reason = expected.get(name)
        if isinstance(reason, str) and reason.strip():
            setattr(cls, name, _expecting_failure(check, reason))
        elif check is not current:
            setattr(cls, name, check)


def _expecting_failure(check: Callable[[Any], None], reason: str) -> Callable[[Any], None]:
    """A copy of ``check`` that unittest (and pytest) count as an expected failure; the original is untouched."""

    @functools.wraps(check)
    def expected_to_fail(self: Any) -> None:
        try:
            check(self)
        except AssertionError as failure:
            raise AssertionError(f"expected failure ({reason}): {failure}") from failure
        except BaseException:
            _not_expecting_failure(self)
            raise
        _not_expecting_failure(self)
        raise UnexpectedSuccess(f"unexpected success: {check.__name__} passed but expected_failures says it fails "
                                f"({reason}); remove it from expected_failures")

    expected_to_fail.__unittest_expecting_failure__ = True  # type: ignore[attr-defined]
    expected_to_fail.expected_failure_reason = reason  # type: ignore[attr-defined]
    return expected_to_fail


def _is_marked(method: Any) -> bool:
    return hasattr(method, "expected_failure_reason")


def _not_expecting_failure(test: Any) -> None:
    """Make unittest report what the running check raises next as it is (a crash, a stale entry), not as the
    expected failure."""
    outcome = getattr(test, "_outcome", None)
    if outcome is not None and hasattr(outcome, "expecting_failure"):
        outcome.expecting_failure = False
