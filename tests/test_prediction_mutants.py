"""Every prediction-writer check fails on at least one broken writer, for the right reason."""

from __future__ import annotations

import unittest

from parameterized import parameterized

from conformance import PredictionWriterConformance
from conformance.report import run_classes
from reference_models.mutants import Mutant
from reference_models.mutants.prediction import PREDICTION_MUTANTS
from tests.mutant_support import mutant_test_name


class TestPredictionMutants(unittest.TestCase):
    @parameterized.expand([(mutant,) for mutant in PREDICTION_MUTANTS], name_func=mutant_test_name)
    def test_killed(self, mutant: Mutant) -> None:
        self.assertEqual(mutant.problems(run_classes([mutant.conformance_class])), [])

    def test_every_check_has_an_intended_mutant(self) -> None:
        covered = {check for mutant in PREDICTION_MUTANTS for check in mutant.kills}
        self.assertEqual(covered, set(PredictionWriterConformance.check_names()))


if __name__ == "__main__":
    unittest.main()
