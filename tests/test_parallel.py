"""Which rank writes predictions: plain DDP, or Megatron's parallel_state when it is initialised."""

from __future__ import annotations

import sys
import types
import unittest
from unittest import mock

from conformance.predictions.ranks import WriterRank, from_replica_writer, writer_rank

STATE_MODULE = "megatron.core.parallel_state"


def fake_parallel_state(*, initialised: bool = True, tp_rank: int = 0, cp_rank: int = 0, last_stage: bool = True,
                        dp_rank: int = 2, dp_size: int = 3) -> types.ModuleType:
    """A stand-in for ``megatron.core.parallel_state`` with the functions the writers call."""
    state = types.ModuleType(STATE_MODULE)
    state.model_parallel_is_initialized = lambda: initialised
    state.get_tensor_model_parallel_rank = lambda: tp_rank
    state.get_context_parallel_rank = lambda: cp_rank
    state.is_pipeline_last_stage = lambda ignore_virtual=False: last_stage and ignore_virtual
    state.get_data_parallel_rank = lambda: dp_rank
    state.get_data_parallel_world_size = lambda: dp_size
    return state


class TestWriterRank(unittest.TestCase):
    def with_state(self, state: types.ModuleType | None) -> None:
        """Make ``state`` the imported parallel_state (None: Megatron not imported) until the test ends."""
        patcher = mock.patch.dict(sys.modules)
        patcher.start()
        self.addCleanup(patcher.stop)
        sys.modules.pop(STATE_MODULE, None)
        if state is not None:
            sys.modules[STATE_MODULE] = state

    def test_ddp_without_megatron(self) -> None:
        self.with_state(None)
        self.assertEqual(writer_rank(5, 8), WriterRank(5, 5, 8, writes=True))

    def test_ddp_when_megatron_is_imported_but_not_initialised(self) -> None:
        self.with_state(fake_parallel_state(initialised=False))
        self.assertEqual(writer_rank(1, 4), WriterRank(1, 1, 4, writes=True))

    def test_first_rank_of_the_last_stage_writes_with_megatron_dp_coordinates(self) -> None:
        self.with_state(fake_parallel_state(dp_rank=2, dp_size=3))
        self.assertEqual(writer_rank(9, 12), WriterRank(9, 2, 3, writes=True))

    def test_other_model_parallel_ranks_do_not_write(self) -> None:
        for other in ({"tp_rank": 1}, {"cp_rank": 1}, {"last_stage": False}):
            with self.subTest(**other):
                self.with_state(fake_parallel_state(dp_rank=1, dp_size=2, **other))
                self.assertEqual(writer_rank(3, 8), WriterRank(3, 1, 2, writes=False, first_of_replica=False))
                self.assertEqual(writer_rank(3, 8, save_all_model_parallel_ranks=True),
                                 WriterRank(3, 1, 2, writes=True, first_of_replica=False))


class TestFromReplicaWriter(unittest.TestCase):
    def test_without_model_parallelism_each_rank_keeps_its_own_value(self) -> None:
        for state in (None, fake_parallel_state(initialised=False)):
            with self.subTest(megatron_imported=state is not None), mock.patch.dict(sys.modules):
                sys.modules.pop(STATE_MODULE, None)
                if state is not None:
                    sys.modules[STATE_MODULE] = state
                value = {(0, 3)}
                self.assertIs(from_replica_writer(value, WriterRank(1, 1, 2, writes=True)), value)


if __name__ == "__main__":
    unittest.main()
