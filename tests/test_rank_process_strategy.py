"""What a recipe's strategy becomes in a rank process the kit launched: Lightning's external-launch DDP with the
kit's short process-group timeout, never a strategy that starts processes of its own."""

from __future__ import annotations

import unittest
from datetime import timedelta

from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from conformance import ConformanceSetupError
from conformance.runs.lightning.trainer import rank_process_strategy


class TunedDDP(DDPStrategy):
    """A recipe's own DDP subclass (as a tensor-parallel strategy would be)."""


class TestRankProcessStrategy(unittest.TestCase):
    def test_named_ddp_strategies_launch_externally_with_the_short_timeout(self) -> None:
        for name in ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_find_unused_parameters_true"):
            with self.subTest(name=name):
                strategy = rank_process_strategy(name, 60)
                self.assertIsInstance(strategy, DDPStrategy)
                self.assertEqual(strategy._start_method, "popen")
                self.assertEqual(strategy._timeout, timedelta(seconds=60))

    def test_a_ddp_object_at_the_default_timeout_gets_the_short_one_and_a_chosen_timeout_stays(self) -> None:
        default = TunedDDP()
        self.assertIs(rank_process_strategy(default, 60), default)
        self.assertEqual(default._timeout, timedelta(seconds=60))
        chosen = TunedDDP(timeout=timedelta(seconds=5))
        self.assertEqual(rank_process_strategy(chosen, 60)._timeout, timedelta(seconds=5))

    def test_other_strategies_pass_unchanged_and_spawning_objects_are_refused(self) -> None:
        single = SingleDeviceStrategy("cpu")
        self.assertIs(rank_process_strategy(single, 60), single)
        with self.assertRaisesRegex(ConformanceSetupError, r"TunedDDP\(start_method='spawn'\), which starts "
                                                           r"processes of its own"):
            rank_process_strategy(TunedDDP(start_method="spawn"), 60)


if __name__ == "__main__":
    unittest.main()
