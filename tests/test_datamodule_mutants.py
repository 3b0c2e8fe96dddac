"""Every data-module check (but the elastic one, see the README) fails on a broken data module, for the right reason."""

from __future__ import annotations

import unittest

from parameterized import parameterized

from conformance.report import run_classes
from reference_models.datamodule_mutants import DATAMODULE_MUTANTS, Mutant


def _mutant_name(function, index, params) -> str:
    return f"{function.__name__}_{params.args[0].name}"


class TestDataModuleMutants(unittest.TestCase):
    @parameterized.expand([(mutant,) for mutant in DATAMODULE_MUTANTS], name_func=_mutant_name)
    def test_killed(self, mutant: Mutant) -> None:
        self.assertEqual(mutant.problems(run_classes([mutant.conformance_class()])), [])


if __name__ == "__main__":
    unittest.main()
