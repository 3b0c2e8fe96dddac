"""Every resume bug of the Hugging Face Trainer backend's mutant catalogue is killed by its intended check, for the
right reason."""

from __future__ import annotations

from tests.hf_support import require_transformers

require_transformers()

import unittest

from parameterized import parameterized

from reference_models.mutants import Mutant
from reference_models.mutants.hf_trainer import HF_TRAINER_MUTANTS
from tests.mutant_support import assert_stop_and_go_mutant_killed, mutant_test_name


class TestHFTrainerMutants(unittest.TestCase):
    @parameterized.expand([(mutant,) for mutant in HF_TRAINER_MUTANTS], name_func=mutant_test_name)
    def test_killed(self, mutant: Mutant) -> None:
        assert_stop_and_go_mutant_killed(self, mutant)


if __name__ == "__main__":
    unittest.main()
