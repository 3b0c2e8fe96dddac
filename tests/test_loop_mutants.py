"""Every resume bug of the loop backend's mutant catalogue is killed by its intended check, for the right reason."""

from __future__ import annotations

import unittest

from parameterized import parameterized

from conformance import StopAndGoConformance
from reference_models.mutants import Mutant
from reference_models.mutants.torch_loop import LOOP_MUTANTS
from tests.mutant_support import assert_stop_and_go_mutant_killed, mutant_test_name


class TestLoopMutants(unittest.TestCase):
    @parameterized.expand([(mutant,) for mutant in LOOP_MUTANTS], name_func=mutant_test_name)
    def test_killed(self, mutant: Mutant) -> None:
        assert_stop_and_go_mutant_killed(self, mutant)

    def test_every_applicable_check_has_an_intended_loop_mutant(self) -> None:
        """The loop backend refuses elastic resume at set-up (it does not support it yet) and runs no callbacks
        (test_callback_state does not apply); every other check must be shown to fail on a loop recipe."""
        covered = {check for mutant in LOOP_MUTANTS for check in mutant.kills}
        self.assertEqual(covered, set(StopAndGoConformance.check_names()) - {"test_elastic_resume",
                                                                             "test_callback_state"})


if __name__ == "__main__":
    unittest.main()
