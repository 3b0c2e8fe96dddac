"""What every conformance mixin shares: the class life cycle, validation of the adopter's hooks and settings,
expected failures and tolerances.

A suite mixin is a plain class (never a ``TestCase``, never named ``Test*``), so importing the kit adds no test
to anyone's run. Its checks are its ``test_*`` methods; their names are public API. How checks fail is in
:mod:`._assertions`, how expected failures are marked in :mod:`._expected_failures`.
"""

from __future__ import annotations

import inspect
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from conformance._setup_checks import mixin_order_problem, resumable_datamodule_problems
from conformance.compare import Tolerance
from conformance.errors import ConformanceSetupError
from conformance.runs.backend import RecipeBackend
from conformance.runs.backends import backend_for
from conformance.runs.launchers import launcher_for, work_folder
from conformance.suites._assertions import NOT_APPLICABLE, CheckAssertions
from conformance.suites._expected_failures import mark_expected_failures
from conformance.training.data import datamodule_consumed_samples

__all__ = ["ConformanceSuite"]

_TOLERANCE_KEYS = frozenset({"atol", "rtol", "equal_nan", "paths"})


class ConformanceSuite(CheckAssertions):
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
    #: Trainer arguments the suite's runs set themselves; ``trainer_kwargs()`` may not set them.
    owned_trainer_kwargs: ClassVar[frozenset[str]] = frozenset()
    #: How the ranks of a run in fresh processes start: "kit" (the kit's launcher), "torchrun", or a command
    #: template around torchrun ending with ``{torchrun_args}`` (see :mod:`conformance.runs.launchers`); the
    #: environment variable ``CONFORMANCE_LAUNCHER`` overrides it for every class.
    launcher: ClassVar[str] = "kit"

    _suite_checks: ClassVar[dict[str, Callable[..., None]]] = {}
    _work_dir: ClassVar[Path]

    # --- hooks with defaults -------------------------------------------------------------------------------
    @classmethod
    def trainer_kwargs(cls) -> dict[str, Any]:
        """Extra ``lightning.Trainer`` arguments for every run (accelerator, devices, accumulation, ...)."""
        return {}

    @classmethod
    def make_callbacks(cls) -> list[Any]:
        """Fresh callbacks of the recipe for one run (e.g. its RNG-state callback)."""
        return []

    @classmethod
    def consumed_samples(cls, trainer: Any) -> int | None:
        """The data module's consumed-samples count; default: ``datamodule.state_dict()['consumed_samples']``."""
        return datamodule_consumed_samples(trainer)

    # --- class life cycle ----------------------------------------------------------------------------------
    def __init_subclass__(cls, suite: bool = False, **kwargs: Any) -> None:
        """A suite mixin (``suite=True``) registers its checks; an adopter gets its expected failures marked."""
        super().__init_subclass__(**kwargs)
        if suite:
            cls._suite_checks = {**cls._suite_checks, **suite_checks(cls)}
            return
        misordered = mixin_order_problem(cls, ConformanceSuite)
        if misordered:
            raise ConformanceSetupError(misordered)
        expected = cls.expected_failures if isinstance(cls.expected_failures, Mapping) else {}
        mark_expected_failures(cls, cls._suite_checks, expected)

    @classmethod
    def setUpClass(cls) -> None:
        """Validate the adopter's settings and hooks, then run what the suite needs once for all its checks."""
        super().setUpClass()  # type: ignore[misc]
        cls.validate()
        cls.check_details = {}
        cls.run_environment = cls.backend().environment_label(cls)
        cls.run_backend = cls.backend().label(cls)
        cls._work_dir = work_folder(f"conformance-{cls.__name__}-")
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

    @classmethod
    def backend(cls) -> RecipeBackend:
        """The backend that runs this class's recipe, chosen from the hooks it defines."""
        return backend_for(cls)

    @classmethod
    def hooks_required(cls) -> tuple[str, ...]:
        """The classmethod hooks this class must define (the suite's ``required_hooks``)."""
        return cls.required_hooks

    # --- validation ----------------------------------------------------------------------------------------
    @classmethod
    def check_names(cls) -> tuple[str, ...]:
        """The public names of this suite's checks."""
        return tuple(cls._suite_checks)

    @classmethod
    def validate(cls) -> None:
        """Raise one :class:`ConformanceSetupError` listing every problem of the settings and of what the hooks
        return (hooks that cannot even be called while the settings are wrong add nothing to the list)."""
        problems = cls._settings_problem_list()
        try:
            problems += cls.recipe_problems()
        except Exception:
            if not problems:
                raise
        _raise_if_any(problems, f"{cls.__qualname__} is not set up correctly")

    @classmethod
    def validate_settings(cls) -> None:
        """Raise :class:`ConformanceSetupError` naming the class, the attribute and the fix for every problem."""
        _raise_if_any(cls._settings_problem_list(), f"{cls.__qualname__} is not set up correctly")

    @classmethod
    def _settings_problem_list(cls) -> list[str]:
        problems = cls._hook_problems() + cls._expected_failure_problems() + cls._tolerance_problems()
        return problems + cls._launcher_problems() + cls.backend().settings_problems(cls) + cls.settings_problems()

    @classmethod
    def _launcher_problems(cls) -> list[str]:
        try:
            launcher_for(cls.launcher)
        except ConformanceSetupError as exc:
            return [str(exc)]
        return []

    @classmethod
    def settings_problems(cls) -> list[str]:
        """Suite-specific setting problems, one message each (name the attribute and the fix)."""
        return []

    @classmethod
    def validate_recipe(cls) -> None:
        """Build what the hooks return and raise :class:`ConformanceSetupError` for every set-up mistake found."""
        _raise_if_any(cls.recipe_problems(), f"{cls.__qualname__}'s hooks return what the kit cannot run")

    @classmethod
    def datamodule_problems(cls, datamodule: Any, data_parallel_ranks: int = 1) -> list[str]:
        """Problems with what ``make_datamodule()`` built for runs on ``data_parallel_ranks`` (suites that need more
        of it say so)."""
        return resumable_datamodule_problems(datamodule, data_parallel_ranks)

    @classmethod
    def recipe_problems(cls) -> list[str]:
        """Problems with what the hooks return, found by calling them (suites add theirs)."""
        return cls.backend().recipe_problems(cls)

    @classmethod
    def _hook_problems(cls) -> list[str]:
        problems = []
        for name in cls.hooks_required():
            hook = inspect.getattr_static(cls, name, None)
            if hook is None:
                problems.append(f"hook '{name}' is missing: define it as a @classmethod returning a fresh object")
            elif inspect.ismethod(hook) and isinstance(hook.__self__, type):
                problems.append(f"hook '{name}' is {hook.__self__.__qualname__}'s classmethod, copied already bound "
                                f"to that class: subclass {hook.__self__.__qualname__} instead of copying its hook")
            elif not isinstance(hook, (classmethod, staticmethod)):
                problems.append(f"hook '{name}' must be a @classmethod (runs are built once per class)")
        return problems

    @classmethod
    def _unknown_check(cls, setting: str, name: str) -> str:
        return f"{setting} names unknown check '{name}'; known checks: {', '.join(cls.check_names())}"

    @classmethod
    def _expected_failure_problems(cls) -> list[str]:
        if not isinstance(cls.expected_failures, Mapping):
            return ["expected_failures must be a dict {check_name: reason}"]
        problems = []
        for name, reason in cls.expected_failures.items():
            if name not in cls._suite_checks:
                problems.append(cls._unknown_check("expected_failures", name))
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
                problems.append(cls._unknown_check("tolerances", name))
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
    def _skip_if_not_applicable(self) -> None:
        """Report the running check as not applicable, with the backend's reason, where its fact does not exist."""
        reason = self.backend().not_applicable.get(self.check_name)
        if reason is not None:
            self.skipTest(f"{NOT_APPLICABLE}{reason}")

    #: The suite's own per-check defaults, under the adopter's ``atol``/``rtol`` and ``tolerances``.
    default_tolerances: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    @classmethod
    def suite_tolerances(cls, check: str, *, first_step: bool = False) -> Mapping[str, Any]:
        """The suite's own tolerance settings for ``check`` (``first_step``: for a record of the first step after a
        resume), under the adopter's ``atol``/``rtol`` and ``tolerances``: ``default_tolerances[check]``."""
        return cls.default_tolerances.get(check, {})

    @classmethod
    def comparison_options(cls, check: str, *, first_step: bool = False) -> dict[str, Any]:
        """Keyword arguments for :func:`conformance.compare.compare` in ``check``.

        Precedence: ``tolerances[check]``, then the class-wide ``atol``/``rtol``, then the suite's own
        (:meth:`suite_tolerances`), then the comparator's per-dtype defaults.
        """
        class_wide = {name: getattr(cls, name) for name in ("atol", "rtol") if getattr(cls, name) is not None}
        settings = {**cls.suite_tolerances(check, first_step=first_step), **class_wide,
                    **cls.tolerances.get(check, {})}
        paths = settings.pop("paths", None)
        options: dict[str, Any] = {"atol": None, "rtol": None, **settings}
        if paths:
            options["path_tolerances"] = {pattern: Tolerance(*pair) for pattern, pair in paths.items()}
        return options


def _raise_if_any(problems: list[str], headline: str) -> None:
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise ConformanceSetupError(f"{headline}:\n{listing}")


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
