"""What every conformance mixin shares: hook validation, expected failures, tolerances and per-check details.

A suite mixin is a plain class (never a ``TestCase``, never named ``Test*``), so importing the kit adds no test
to anyone's run. Its checks are its ``test_*`` methods; their names are public API.
"""

from __future__ import annotations

import functools
import inspect
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl

from conformance.compare import LeafStat, Tolerance
from conformance.records import datamodule_consumed_samples

__all__ = ["CheckDetail", "ConformanceSetupError", "ConformanceSuite"]

_TOLERANCE_KEYS = frozenset({"atol", "rtol", "equal_nan", "paths"})


class ConformanceSetupError(TypeError):
    """A conformance class is set up wrongly (missing hook, unknown check name, inconsistent settings)."""


@dataclass
class CheckDetail:
    """What a check measured, for reports: the leaf that came closest to its tolerance, and a summary line."""

    worst: LeafStat | None = None
    summary: str = ""


class ConformanceSuite:
    """Base of the conformance mixins; adopters inherit a mixin first and ``unittest.TestCase`` second.

    Adopters implement the classmethod hooks in ``required_hooks`` and may override the optional ones below.
    """

    #: Classmethod hooks an adopter must implement.
    required_hooks: ClassVar[tuple[str, ...]] = ("make_model", "make_datamodule")
    #: ``{check_name: reason}``: these checks must fail ("expected failure"); passing is an unexpected success.
    expected_failures: ClassVar[Mapping[str, str]] = {}
    #: ``{check_name: {"atol": .., "rtol": .., "equal_nan": .., "paths": {glob: (atol, rtol)}}}``; unset keys
    #: fall back to ``atol``/``rtol`` below, then to the comparator's per-dtype defaults.
    tolerances: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: Tolerances for every check not listed in ``tolerances``; None means the per-dtype default.
    atol: ClassVar[float | None] = None
    rtol: ClassVar[float | None] = None
    #: Every run is seeded with this (``lightning.seed_everything``) before the recipe is built.
    seed: ClassVar[int] = 1234

    #: Filled in during the run of a class: ``{check_name: CheckDetail}``.
    check_details: ClassVar[dict[str, CheckDetail]]
    _suite_checks: ClassVar[dict[str, Callable[..., None]]] = {}
    _work_dir: ClassVar[Path]

    # --- hooks with defaults -------------------------------------------------------------------------------
    @classmethod
    def trainer_kwargs(cls) -> dict[str, Any]:
        """Extra ``lightning.Trainer`` arguments for every run (accelerator, devices, accumulation, ...)."""
        return {}

    @classmethod
    def make_callbacks(cls) -> list[pl.Callback]:
        """Fresh callbacks of the recipe for one run (e.g. its RNG-state callback)."""
        return []

    @classmethod
    def consumed_samples(cls, trainer: pl.Trainer) -> int | None:
        """The data module's consumed-samples count; default: ``datamodule.state_dict()['consumed_samples']``."""
        return datamodule_consumed_samples(trainer)

    # --- class life cycle ----------------------------------------------------------------------------------
    def __init_subclass__(cls, suite: bool = False, **kwargs: Any) -> None:
        """A suite mixin (``suite=True``) registers its checks; an adopter gets its expected failures marked."""
        super().__init_subclass__(**kwargs)
        if suite:
            cls._suite_checks = {**cls._suite_checks, **suite_checks(cls)}
            return
        expected = cls.expected_failures if isinstance(cls.expected_failures, Mapping) else {}
        for name in cls._suite_checks:
            current = getattr(cls, name)
            check = getattr(current, "__wrapped__", current) if _is_expecting_failure(current) else current
            reason = expected.get(name)
            if isinstance(reason, str) and reason.strip():
                setattr(cls, name, _expecting_failure(check, reason))
            elif check is not current:
                setattr(cls, name, check)

    @classmethod
    def setUpClass(cls) -> None:
        """Validate the adopter's settings, then run what the suite needs once for all its checks."""
        super().setUpClass()  # type: ignore[misc]
        cls.validate_settings()
        cls.check_details = {}
        cls._work_dir = Path(tempfile.mkdtemp(prefix=f"conformance-{cls.__name__}-"))
        try:
            cls.prepare()
        except BaseException:
            shutil.rmtree(cls._work_dir, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls._work_dir, ignore_errors=True)
        super().tearDownClass()  # type: ignore[misc]

    @classmethod
    def prepare(cls) -> None:
        """Suite-specific work done once per class (training runs, ...), after validation."""

    # --- validation ----------------------------------------------------------------------------------------
    @classmethod
    def check_names(cls) -> tuple[str, ...]:
        """The public names of this suite's checks."""
        return tuple(cls._suite_checks)

    @classmethod
    def validate_settings(cls) -> None:
        """Raise :class:`ConformanceSetupError` naming the class, the attribute and the fix for every problem."""
        problems = cls._hook_problems() + cls._expected_failure_problems() + cls._tolerance_problems()
        problems += cls.settings_problems()
        if problems:
            listing = "\n".join(f"  - {problem}" for problem in problems)
            raise ConformanceSetupError(f"{cls.__qualname__} is not set up correctly:\n{listing}")

    @classmethod
    def settings_problems(cls) -> list[str]:
        """Suite-specific setting problems, one message each (name the attribute and the fix)."""
        return []

    @classmethod
    def _hook_problems(cls) -> list[str]:
        problems = []
        for name in cls.required_hooks:
            hook = inspect.getattr_static(cls, name, None)
            if hook is None:
                problems.append(f"hook '{name}' is missing: define it as a @classmethod returning a fresh object")
            elif not isinstance(hook, (classmethod, staticmethod)):
                problems.append(f"hook '{name}' must be a @classmethod (runs are built once per class)")
        return problems

    @classmethod
    def _expected_failure_problems(cls) -> list[str]:
        if not isinstance(cls.expected_failures, Mapping):
            return ["expected_failures must be a dict {check_name: reason}"]
        problems = []
        for name, reason in cls.expected_failures.items():
            if name not in cls._suite_checks:
                problems.append(f"expected_failures names unknown check '{name}'; known checks: "
                                f"{', '.join(cls.check_names())}")
            elif not isinstance(reason, str) or not reason.strip():
                problems.append(f"expected_failures['{name}'] needs a non-empty reason string saying why it fails")
        return problems

    @classmethod
    def _tolerance_problems(cls) -> list[str]:
        if not isinstance(cls.tolerances, Mapping):
            return ["tolerances must be a dict {check_name: {'atol': .., 'rtol': ..}}"]
        problems = []
        for name, settings in cls.tolerances.items():
            if name not in cls._suite_checks:
                problems.append(f"tolerances names unknown check '{name}'; known checks: "
                                f"{', '.join(cls.check_names())}")
            elif not isinstance(settings, Mapping) or not set(settings) <= _TOLERANCE_KEYS:
                problems.append(f"tolerances['{name}'] must be a dict with keys among {sorted(_TOLERANCE_KEYS)}")
            else:
                problems += _tolerance_value_problems(f"tolerances['{name}']", settings)
        for name in ("atol", "rtol"):
            value = getattr(cls, name)
            if value is not None and not _is_tolerance(value):
                problems.append(f"{name} must be None or a non-negative number, got {value!r}")
        return problems

    # --- helpers for checks --------------------------------------------------------------------------------
    #: The suite's own per-check defaults, under the adopter's ``atol``/``rtol`` and ``tolerances``.
    default_tolerances: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    @classmethod
    def comparison_options(cls, check: str) -> dict[str, Any]:
        """Keyword arguments for :func:`conformance.compare.compare` in ``check``.

        Precedence: ``tolerances[check]``, then the class-wide ``atol``/``rtol``, then the suite's
        ``default_tolerances[check]``, then the comparator's per-dtype defaults.
        """
        class_wide = {name: getattr(cls, name) for name in ("atol", "rtol") if getattr(cls, name) is not None}
        settings = {**cls.default_tolerances.get(check, {}), **class_wide, **cls.tolerances.get(check, {})}
        paths = settings.pop("paths", None)
        options: dict[str, Any] = {"atol": None, "rtol": None, **settings}
        if paths:
            options["path_tolerances"] = {pattern: Tolerance(*pair) for pattern, pair in paths.items()}
        return options

    def note_detail(self, check: str, worst: LeafStat | None, summary: str) -> None:
        """Remember what ``check`` measured, for the report of the ``certify`` command."""
        type(self).check_details[check] = CheckDetail(worst, summary)


def _tolerance_value_problems(where: str, settings: Mapping[str, Any]) -> list[str]:
    """Problems with the values of one check's tolerance settings."""
    problems = [f"{where}['{name}'] must be a non-negative number, got {settings[name]!r}"
                for name in ("atol", "rtol") if name in settings and not _is_tolerance(settings[name])]
    paths = settings.get("paths", {})
    if not isinstance(paths, Mapping) or not all(
            isinstance(pattern, str) and isinstance(pair, (tuple, list)) and len(pair) == 2
            and all(_is_tolerance(value) for value in pair) for pattern, pair in paths.items()):
        problems.append(f"{where}['paths'] must map glob strings to (atol, rtol) pairs of non-negative numbers, "
                        f"got {paths!r}")
    return problems


def _is_tolerance(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def suite_checks(suite: type) -> dict[str, Callable[..., None]]:
    """The ``test_*`` functions a suite mixin defines, in definition order."""
    return {name: value for name, value in vars(suite).items() if name.startswith("test_") and callable(value)}


def _expecting_failure(check: Callable[[Any], None], reason: str) -> Callable[[Any], None]:
    """A copy of ``check`` that unittest (and pytest) count as an expected failure; the original is untouched."""

    @functools.wraps(check)
    def expected_to_fail(self: Any) -> None:
        try:
            check(self)
        except AssertionError as failure:
            raise AssertionError(f"expected failure ({reason}): {failure}") from failure
        except BaseException:
            _count_as_error(self)
            raise

    expected_to_fail.__unittest_expecting_failure__ = True  # type: ignore[attr-defined]
    expected_to_fail.expected_failure_reason = reason  # type: ignore[attr-defined]
    return expected_to_fail


def _is_expecting_failure(method: Any) -> bool:
    return hasattr(method, "expected_failure_reason")


def _count_as_error(test: Any) -> None:
    """Make unittest report a crash inside an expected-failure check as an error, not as the expected failure."""
    outcome = getattr(test, "_outcome", None)
    if outcome is not None and hasattr(outcome, "expecting_failure"):
        outcome.expecting_failure = False
