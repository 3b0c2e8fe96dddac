"""The Megatron-core TP=2 and NeMo MegatronStrategy TP=2 reference classes reach under torchrun the verdicts they
reach under the kit's launcher (every check passes). Needs Megatron-core and NeMo: the nemo tox environment."""

from __future__ import annotations

import importlib.util
import unittest

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

    def test_megatron_core_tensor_parallel(self) -> None:
        from reference_models import certify_megatron

        self.assertSameVerdicts(certify_megatron.TestMegatronGPTTensorParallelStopAndGo)

    def test_nemo_megatron_strategy_tensor_parallel(self) -> None:
        from reference_models import certify_nemo

        self.assertSameVerdicts(certify_nemo.TestNeMoGPTTensorParallelStopAndGo)


if __name__ == "__main__":
    unittest.main()
