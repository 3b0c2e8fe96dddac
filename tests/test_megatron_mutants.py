"""Broken tensor-parallel recipes fail the checks that must catch them, for the right reason (needs
megatron-core: ``tox -e nemo``)."""

from __future__ import annotations

import unittest

from tests.megatron_support import require_megatron

require_megatron()

from parameterized import parameterized

from conformance.report import run_classes
from reference_models.mutants import Mutant
from reference_models.mutants.megatron import MEGATRON_MUTANTS
from tests.mutant_support import mutant_test_name


class TestMegatronMutants(unittest.TestCase):
    @parameterized.expand([(mutant,) for mutant in MEGATRON_MUTANTS], name_func=mutant_test_name)
    def test_killed(self, mutant: Mutant) -> None:
        self.assertEqual(mutant.problems(run_classes([mutant.conformance_class])), [])


if __name__ == "__main__":
    unittest.main()
