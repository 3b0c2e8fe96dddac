"""Every applicable check of DataModuleResumeConformance's loader backend fails on a broken stateful loader, for the
right reason."""

from __future__ import annotations

import unittest

from parameterized import parameterized

from conformance import DataModuleResumeConformance
from conformance.report import run_classes
from conformance.runs.loader.backend import LOADER
from reference_models.mutants import Mutant
from reference_models.mutants.stateful_loader import LOADER_MUTANTS
from tests.mutant_support import mutant_test_name


class TestLoaderMutants(unittest.TestCase):
    @parameterized.expand([(mutant,) for mutant in LOADER_MUTANTS], name_func=mutant_test_name)
    def test_killed(self, mutant: Mutant) -> None:
        self.assertEqual(mutant.problems(run_classes([mutant.conformance_class])), [])

    def test_every_applicable_check_has_an_intended_mutant(self) -> None:
        covered = {check for mutant in LOADER_MUTANTS for check in mutant.kills}
        applicable = set(DataModuleResumeConformance.check_names()) - set(LOADER.not_applicable)
        self.assertEqual(covered, applicable)


if __name__ == "__main__":
    unittest.main()
