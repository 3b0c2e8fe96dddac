"""A suite without training runs, for tests of the suite machinery itself (not collected: not named test_*)."""

from __future__ import annotations

import unittest

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
