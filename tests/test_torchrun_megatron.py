"""The Megatron-core TP=2 and NeMo MegatronStrategy TP=2 reference classes reach under torchrun the verdicts they
reach under the kit's launcher (every check passes), and a mutant of each is killed there. Needs Megatron-core and
NeMo: the nemo tox environment."""

from __future__ import annotations

import importlib
import importlib.util
import os
import unittest
from unittest import mock

from conformance.report import run_classes
from conformance.runs.launchers import LAUNCHER_ENV
from tests import launcher_subjects

HAS_NEMO = importlib.util.find_spec("nemo") is not None and importlib.util.find_spec("megatron") is not None


@unittest.skipUnless(HAS_NEMO, "needs Megatron-core and NeMo (tox -e nemo)")
class TestMegatronUnderTorchrun(unittest.TestCase):
    def assertSameVerdicts(self, cls: type) -> None:
        verdicts = launcher_subjects.verdicts_by_launcher(cls)
        (kit, _), (torchrun, torchrun_text) = verdicts["kit"], verdicts["torchrun"]
        self.assertEqual(torchrun, kit, torchrun_text)
        self.assertNotIn("failed", torchrun.values(), torchrun_text)
        self.assertIn("ranks started by torchrun (node 0 of 1)", torchrun_text)

    def assertKilledUnderTorchrun(self, catalogue: str, name: str) -> None:
        mutants = getattr(importlib.import_module(f"reference_models.mutants.{catalogue}"),
                          f"{catalogue.upper()}_MUTANTS")
        mutant = next(mutant for mutant in mutants if mutant.name == name)
        with mock.patch.dict(os.environ, {LAUNCHER_ENV: "torchrun"}):
            report = run_classes([mutant.conformance_class])
        self.assertEqual(mutant.problems(report), [], report.format_text())

    def test_megatron_core_tensor_parallel(self) -> None:
        from reference_models import certify_megatron

        self.assertSameVerdicts(certify_megatron.TestMegatronGPTTensorParallelStopAndGo)

    def test_nemo_megatron_strategy_tensor_parallel(self) -> None:
        from reference_models import certify_nemo

        self.assertSameVerdicts(certify_nemo.TestNeMoGPTTensorParallelStopAndGo)

    def test_a_megatron_mutant_is_killed_under_torchrun(self) -> None:
        self.assertKilledUnderTorchrun("megatron", "tracker_not_restored")

    def test_a_nemo_mutant_is_killed_under_torchrun(self) -> None:
        self.assertKilledUnderTorchrun("nemo", "sampler_forgets_init_global_step")


if __name__ == "__main__":
    unittest.main()
