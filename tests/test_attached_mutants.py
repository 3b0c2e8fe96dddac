"""Every resume bug of the attached backend's mutant catalogue is killed by its intended check, for the right
reason."""

from __future__ import annotations

import unittest

from parameterized import parameterized

from reference_models.mutants import Mutant
from reference_models.mutants.attached_trainer import ATTACHED_MUTANTS
from tests.mutant_support import assert_stop_and_go_mutant_killed, mutant_test_name


class TestAttachedMutants(unittest.TestCase):
    @parameterized.expand([(mutant,) for mutant in ATTACHED_MUTANTS], name_func=mutant_test_name)
    def test_killed(self, mutant: Mutant) -> None:
        assert_stop_and_go_mutant_killed(self, mutant)


if __name__ == "__main__":
    unittest.main()
