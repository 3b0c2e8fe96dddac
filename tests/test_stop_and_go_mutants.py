"""Every stop-and-go check fails on at least one deliberately broken recipe, for the right reason."""

from __future__ import annotations

import unittest

from parameterized import parameterized

from conformance import StopAndGoConformance
from reference_models.mutants import Mutant
from reference_models.mutants.stop_and_go import STOP_AND_GO_MUTANTS
from tests.mutant_support import assert_stop_and_go_mutant_killed, mutant_test_name


class TestStopAndGoMutants(unittest.TestCase):
    @parameterized.expand([(mutant,) for mutant in STOP_AND_GO_MUTANTS], name_func=mutant_test_name)
    def test_killed(self, mutant: Mutant) -> None:
        if mutant.harmless_here():
            self.skipTest(mutant.harmless_here())
        assert_stop_and_go_mutant_killed(self, mutant)

    def test_every_check_has_an_intended_mutant(self) -> None:
        covered = {check for mutant in STOP_AND_GO_MUTANTS for check in mutant.kills}
        self.assertEqual(covered, set(StopAndGoConformance.check_names()))


if __name__ == "__main__":
    unittest.main()
