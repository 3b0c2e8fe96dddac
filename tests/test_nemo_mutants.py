"""Broken NeMo 2 recipes fail the checks that must catch them, for the right reason, and every report says the runs
were NeMo's strategy on CPU emulation (needs nemo-toolkit 2.7: ``tox -e nemo``)."""

from __future__ import annotations

import unittest

from tests.megatron_support import require_nemo

require_nemo()

from parameterized import parameterized

from conformance.report import run_classes
from conformance.runs.nemo.cpu_emulation import LABEL
from reference_models.mutants import Mutant
from reference_models.mutants.nemo import NEMO_MUTANTS
from tests.mutant_support import mutant_test_name


class TestNeMoMutants(unittest.TestCase):
    @parameterized.expand([(mutant,) for mutant in NEMO_MUTANTS], name_func=mutant_test_name)
    def test_killed(self, mutant: Mutant) -> None:
        report = run_classes([mutant.conformance_class])
        self.assertEqual(mutant.problems(report), [])
        self.assertEqual({outcome.environment for outcome in report.outcomes}, {LABEL})
        self.assertIn(f"{mutant.conformance_class.__qualname__} [{LABEL}]", report.format_text())
        failed = [outcome for outcome in report.outcomes if outcome.status == "failed"]
        self.assertTrue(failed and all(f"(runs: {LABEL})" in outcome.message for outcome in failed))


if __name__ == "__main__":
    unittest.main()
