"""Every data-module check fails on at least one broken data module, for the right reason."""

from __future__ import annotations

import unittest

from parameterized import parameterized

from conformance import DataModuleResumeConformance
from conformance.report import run_classes
from reference_models.certify import LIGHTNING_RESUMES_ONE_BATCH_EARLY
from reference_models.mutants import Mutant
from reference_models.mutants.datamodule import DATAMODULE_MUTANTS
from tests.mutant_support import mutant_test_name


@unittest.skipIf(LIGHTNING_RESUMES_ONE_BATCH_EARLY,
                 "on Lightning < 2.5 the reference data module itself fails six checks (Lightning resumes one "
                 "micro-batch early), so mutant kill sets are not measurable there")
class TestDataModuleMutants(unittest.TestCase):
    @parameterized.expand([(mutant,) for mutant in DATAMODULE_MUTANTS], name_func=mutant_test_name)
    def test_killed(self, mutant: Mutant) -> None:
        self.assertEqual(mutant.problems(run_classes([mutant.conformance_class])), [])

    def test_every_check_has_an_intended_mutant(self) -> None:
        covered = {check for mutant in DATAMODULE_MUTANTS for check in mutant.kills}
        self.assertEqual(covered, set(DataModuleResumeConformance.check_names()))


if __name__ == "__main__":
    unittest.main()
