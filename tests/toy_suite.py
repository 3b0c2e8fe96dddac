"""A suite without training runs, for tests of the suite machinery itself (not collected: not named test_*)."""

from __future__ import annotations

import unittest

from conformance.errors import ConformanceSetupError
from conformance.suites._base import ConformanceSuite


class ToySuite(ConformanceSuite, suite=True):
    """A suite without training runs: one check that passes, one that fails, one that crashes."""

    required_hooks = ()

    def test_passes(self) -> None:
        pass

    def test_fails(self) -> None:
        raise AssertionError("the toy property does not hold")

    def test_crashes(self) -> None:
        raise RuntimeError("bug in the check itself")


def adopter(base: type, name: str = "Adopter", **attributes: object) -> type:
    """A test class as a model author would write it: ``class Adopter(base, unittest.TestCase)``."""
    return type(name, (base, unittest.TestCase), {"__module__": __name__, "__qualname__": name, **attributes})


class SetupErrorAssertions(unittest.TestCase):
    """``assertSetupError``: a class's settings, then (once they are right) its hooks' results, fail set-up with one
    error naming the class and every phrase given."""

    def assertSetupError(self, cls: type, *phrases: str) -> None:
        with self.assertRaises(ConformanceSetupError) as caught:
            cls.validate_settings()
            cls.validate_recipe()  # reached once the settings are right
        for phrase in (cls.__qualname__, *phrases):
            self.assertIn(phrase, str(caught.exception))
