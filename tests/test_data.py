"""The consumed-samples batch sampler and the ResumableDataModule bookkeeping."""

from __future__ import annotations

import unittest
from types import SimpleNamespace

import lightning.pytorch as pl
import torch
from lightning.pytorch.loops.progress import _BatchProgress

from conformance import ConsumedSamplesBatchSampler, ElasticResumeRefused, ResumableDataModule
from reference_models.data import SyntheticDataModule, SyntheticTokens


def flatten(batches) -> list[int]:
    return [index for batch in batches for index in batch]


class TestConsumedSamplesBatchSampler(unittest.TestCase):
    def sampler(self, **overrides) -> ConsumedSamplesBatchSampler:
        settings = {"total_samples": 20, "consumed_samples": 0, "micro_batch_size": 2, "global_batch_size": 4}
        return ConsumedSamplesBatchSampler(**{**settings, **overrides})

    def test_sequential_epoch_drops_the_partial_global_batch(self) -> None:
        sampler = self.sampler(total_samples=22)
        self.assertEqual(list(sampler), [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 13], [14, 15],
                                         [16, 17], [18, 19]])
        self.assertEqual(len(sampler), 10)

    def test_resume_yields_exactly_the_rest_and_reports_the_full_epoch_length(self) -> None:
        full = flatten(self.sampler(shuffle=True, seed=3))
        for consumed in (0, 4, 8, 16):
            with self.subTest(consumed=consumed):
                resumed = self.sampler(consumed_samples=consumed, shuffle=True, seed=3)
                self.assertEqual(flatten(resumed), full[consumed:])
                self.assertEqual(len(resumed), 10)

    def test_next_iteration_is_the_next_epoch_with_its_own_shuffle(self) -> None:
        sampler = self.sampler(shuffle=True, seed=3)
        first, second = flatten(sampler), flatten(sampler)
        self.assertEqual(sorted(first), list(range(20)))
        self.assertEqual(sorted(second), list(range(20)))
        self.assertNotEqual(first, second)
        self.assertEqual(flatten(self.sampler(consumed_samples=20, shuffle=True, seed=3)), second)

    def test_an_iterator_that_is_never_read_does_not_move_the_epoch(self) -> None:
        sampler = self.sampler(shuffle=True, seed=3)
        iter(sampler)  # what a multi-worker DataLoader does before creating the iterator it reads
        self.assertEqual(flatten(sampler), flatten(self.sampler(shuffle=True, seed=3)))

    def test_partially_read_epoch_still_moves_on(self) -> None:
        sampler = self.sampler()
        iterator = iter(sampler)
        next(iterator)
        self.assertEqual(next(iter(sampler)), [0, 1], "a new iter() starts the next epoch (epoch 1, unshuffled)")

    def test_ranks_are_disjoint_and_their_union_is_the_global_stream(self) -> None:
        single = flatten(self.sampler(global_batch_size=8, shuffle=True))
        ranks = [list(self.sampler(global_batch_size=8, shuffle=True, data_parallel_rank=rank,
                                   data_parallel_size=2)) for rank in (0, 1)]
        rebuilt = []
        for step in range(2):  # 2 global batches of 8 = 2 micro-batches x 2 ranks x 2 samples
            for rank in (0, 1):
                rebuilt += flatten(ranks[rank][2 * step: 2 * step + 2])
        self.assertEqual(rebuilt, single)
        self.assertFalse(set(flatten(ranks[0])) & set(flatten(ranks[1])))

    def test_eval_mode_keeps_the_partial_last_batch(self) -> None:
        sampler = self.sampler(total_samples=7, drop_last=False)
        self.assertEqual(list(sampler), [[0, 1], [2, 3], [4, 5], [6]])
        self.assertEqual(len(sampler), 4)

    def test_bad_arguments_name_the_problem(self) -> None:
        for overrides, phrase in [
            ({"global_batch_size": 6, "data_parallel_size": 2}, "multiple of micro_batch_size x data_parallel_size"),
            ({"consumed_samples": 3}, "multiple of global_batch_size"),
            ({"total_samples": 0}, "the dataset is empty"),
            ({"total_samples": 3}, "fewer than one global batch"),
            ({"data_parallel_rank": 2, "data_parallel_size": 2, "global_batch_size": 4}, "outside [0, 2)"),
        ]:
            with self.subTest(overrides=overrides), self.assertRaises(ValueError) as caught:
                self.sampler(**overrides)
            self.assertIn(phrase, str(caught.exception))


class TestResumableDataModule(unittest.TestCase):
    """SyntheticDataModule: micro-batches of 4, global batches of 8 (2 micro-batches per optimizer step)."""

    def attach(self, datamodule: ResumableDataModule, micro_batches: int = 0) -> SimpleNamespace:
        """A stand-in Lightning trainer whose fit loop has trained ``micro_batches`` (``train(trainer, n)`` moves
        it on)."""
        progress = _BatchProgress()
        progress.total.processed = micro_batches
        trainer = SimpleNamespace(strategy=SimpleNamespace(),
                                  fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)))
        datamodule.trainer = trainer
        return trainer

    @staticmethod
    def train(trainer: SimpleNamespace, micro_batches: int) -> None:
        trainer.fit_loop.epoch_loop.batch_progress.total.processed = micro_batches

    def test_consumed_samples_follow_the_micro_batches_trained_since_the_loader_was_built(self) -> None:
        datamodule = SyntheticDataModule()
        trainer = self.attach(datamodule)
        self.assertEqual(datamodule.state_dict(),
                         {"consumed_samples": 0, "global_batch_size": 8, "data_parallel_size": 1})
        datamodule.train_dataloader()
        self.train(trainer, 6)
        self.assertEqual(datamodule.consumed_samples, 24)

    def test_the_count_ignores_how_many_optimizer_steps_a_batch_takes(self) -> None:
        """Manual optimization with two optimizers: Lightning's global step moves twice per batch, the count once."""
        datamodule = SyntheticDataModule(micro_batch_size=4, global_batch_size=4)
        trainer = self.attach(datamodule)
        trainer.global_step = 0
        datamodule.train_dataloader()
        self.train(trainer, 3)
        trainer.global_step = 6
        self.assertEqual(datamodule.consumed_samples, 12)

    def test_restored_state_resumes_the_loader_and_counts_from_the_restored_position(self) -> None:
        datamodule = SyntheticDataModule()
        trainer = self.attach(datamodule, 8)
        datamodule.load_state_dict({"consumed_samples": 32, "global_batch_size": 8})
        self.assertEqual(datamodule.consumed_samples, 32, "before the loader is built the restored value holds")
        loader = datamodule.train_dataloader()
        expected_next = flatten(SyntheticDataModule().train_dataloader().batch_sampler)[32:36]
        self.assertEqual(next(iter(loader))["idx"].tolist(), expected_next)
        self.train(trainer, 12)
        self.assertEqual(datamodule.consumed_samples, 48)

    def test_repeated_resumes_stay_exact(self) -> None:
        datamodule = SyntheticDataModule()
        trainer = self.attach(datamodule, 4)
        datamodule.load_state_dict({"consumed_samples": 16, "global_batch_size": 8})
        datamodule.train_dataloader()
        self.train(trainer, 10)
        state = datamodule.state_dict()
        again = SyntheticDataModule()
        self.train(self.attach(again), 10)
        again.load_state_dict(state)
        again.train_dataloader()
        self.train(again.trainer, 14)
        self.assertEqual(again.consumed_samples, 56)

    def test_validation_always_starts_at_the_first_sample(self) -> None:
        datamodule = SyntheticDataModule()
        self.attach(datamodule, 8)
        datamodule.load_state_dict({"consumed_samples": 32, "global_batch_size": 8})
        self.assertEqual(next(iter(datamodule.val_dataloader()))["idx"].tolist(), [0, 1, 2, 3])

    def test_resuming_on_fewer_ranks_translates_lightnings_position_in_the_epoch(self) -> None:
        """Saved on 2 ranks after 3 steps of one micro-batch per rank, resumed on 1 rank (2 micro-batches a step):
        Lightning's counters say 3 micro-batches (the last not yet completed, as saved in on_train_batch_end)."""
        datamodule = SyntheticDataModule()
        trainer = self.attach(datamodule)
        progress = trainer.fit_loop.epoch_loop.batch_progress
        for counts in (progress.current, progress.total):
            counts.ready = counts.started = counts.processed = 3
            counts.completed = 2
        datamodule.load_state_dict({"consumed_samples": 24, "global_batch_size": 8, "data_parallel_size": 2})
        loader = datamodule.train_dataloader()
        self.assertEqual(next(iter(loader))["idx"].tolist(), loader.batch_sampler.epoch_order(0)[24:28].tolist())
        for counts in (progress.current, progress.total):
            self.assertEqual((counts.ready, counts.started, counts.processed, counts.completed), (6, 6, 6, 5))

    def test_a_data_module_declaring_no_elastic_resume_refuses_another_data_parallel_size(self) -> None:
        datamodule = type("Inelastic", (SyntheticDataModule,), {"supports_elastic_resume": False})()
        self.attach(datamodule, 8)
        datamodule.load_state_dict({"consumed_samples": 32, "global_batch_size": 8, "data_parallel_size": 2})
        with self.assertRaises(ElasticResumeRefused) as caught:
            datamodule.train_dataloader()
        self.assertIn("saved on 2 data-parallel rank(s) and this run has 1", str(caught.exception))
        self.assertTrue(SyntheticDataModule.supports_elastic_resume, "translated: see test_elastic_resume")

    def test_state_saved_with_another_global_batch_size_is_refused(self) -> None:
        with self.assertRaises(ValueError) as caught:
            SyntheticDataModule().load_state_dict({"consumed_samples": 32, "global_batch_size": 16})
        self.assertIn("global_batch_size 16", str(caught.exception))
        with self.assertRaises(ValueError):
            SyntheticDataModule().load_state_dict({"consumed": 3})

    def test_is_a_lightning_datamodule_with_stateful_checkpointing(self) -> None:
        self.assertIsInstance(SyntheticDataModule(), pl.LightningDataModule)


class TestSyntheticTokens(unittest.TestCase):
    def test_samples_are_deterministic_and_never_use_the_mask_id(self) -> None:
        first, again = SyntheticTokens(50, 16, 64, seed=1), SyntheticTokens(50, 16, 64, seed=1)
        for index in (0, 17, 49):
            self.assertTrue(torch.equal(first[index]["tokens"], again[index]["tokens"]))
            self.assertLess(int(first[index]["tokens"].max()), 63)
        self.assertFalse(torch.equal(first[0]["tokens"], SyntheticTokens(50, 16, 64, seed=2)[0]["tokens"]))
        with self.assertRaises(IndexError):
            first[50]


if __name__ == "__main__":
    unittest.main()
