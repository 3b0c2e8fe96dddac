"""The subjects of tests/test_false_verdicts.py: the tiny GPT with and without randomness in its training steps,
neither restoring the RNG, with a StatefulDataLoader data module keeping no consumed-samples count, with an EMA
callback with and without checkpoint state, and trained by manual optimization with two optimizers (classes at
module level: their fresh processes import them by name). Not collected."""

from __future__ import annotations

import unittest
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from conformance import RNGStateCallback, StopAndGoConformance
from reference_models.data import SyntheticDataModule, SyntheticTokens
from reference_models.ema import CheckpointedEMA, EMAOfWeights, WarmupEMA
from reference_models.gpt import TinyGPT
from reference_models.recipes import DDPGPTRecipe, GPTRecipe, StepSeededGPTRecipe
from reference_models.transformer import TransformerConfig


class NoDropoutNoRNGRestore(GPTRecipe):
    """The tiny GPT without dropout (its training draws nothing random) and without RNGStateCallback."""

    @classmethod
    def make_model(cls) -> pl.LightningModule:
        return TinyGPT(TransformerConfig(dropout=0.0))

    @classmethod
    def make_callbacks(cls) -> list[pl.Callback]:
        return []


class NoRandomness(NoDropoutNoRNGRestore, StopAndGoConformance, unittest.TestCase):
    num_steps, stop_step = 6, 3


class DropoutWithoutRNGRestore(GPTRecipe, StopAndGoConformance, unittest.TestCase):
    num_steps, stop_step = 6, 3

    @classmethod
    def make_callbacks(cls) -> list[pl.Callback]:
        return []


class StatefulLoaderData(pl.LightningDataModule):
    """A plain Lightning data module whose train loader is torchdata's StatefulDataLoader: Lightning keeps the
    loader's position in its own loop state; the data module keeps no consumed-samples count."""

    def __init__(self) -> None:
        super().__init__()
        self.train_set, self.val_set = SyntheticTokens(44, 16, 64, seed=7), SyntheticTokens(8, 16, 64, seed=8)

    def train_dataloader(self) -> StatefulDataLoader:
        return StatefulDataLoader(self.train_set, batch_size=4, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=4)


class StatefulLoaderDataModule(GPTRecipe, StopAndGoConformance, unittest.TestCase):
    num_steps, stop_step = 8, 4

    @classmethod
    def make_datamodule(cls) -> pl.LightningDataModule:
        return StatefulLoaderData()

    @classmethod
    def trainer_kwargs(cls) -> dict[str, Any]:
        return {"accumulate_grad_batches": 2, "val_check_interval": 2, "limit_val_batches": 2}


class StatefulLoaderCountedByHook(StatefulLoaderDataModule):
    """The same, with the count the README's hint suggests: derived in consumed_samples(trainer), not kept. It
    counts the batches Lightning's loop trained (an epoch of 11 batches ends on a step of one micro-batch, so
    ``global_step x 8`` would claim 4 samples too many from step 6 on)."""

    @classmethod
    def consumed_samples(cls, trainer: Any) -> int | None:
        return trainer.fit_loop.epoch_loop.batch_progress.total.processed * 4


class EMAWithoutCheckpointState(GPTRecipe, StopAndGoConformance, unittest.TestCase):
    num_steps, stop_step = 6, 3

    @classmethod
    def make_callbacks(cls) -> list[pl.Callback]:
        return [RNGStateCallback(), EMAOfWeights()]


class EMAWithCheckpointState(EMAWithoutCheckpointState):
    @classmethod
    def make_callbacks(cls) -> list[pl.Callback]:
        return [RNGStateCallback(), CheckpointedEMA()]


class TwoOptimizerGPT(TinyGPT):
    """The tiny GPT (no dropout) trained by manual optimization: one AdamW for the embeddings and blocks (warmup
    and cosine decay, stepped per batch), one SGD with momentum for the output head, as an author writes such a
    split."""

    def __init__(self) -> None:
        super().__init__(TransformerConfig(dropout=0.0))
        self.automatic_optimization = False

    def _is_head(self, name: str) -> bool:
        return name.startswith("transformer.head")

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        body, head = self.optimizers()
        loss = self.loss(batch, training=True)
        body.zero_grad()
        head.zero_grad()
        self.manual_backward(loss)
        body.step()
        head.step()
        self.lr_schedulers().step()
        return loss

    def configure_optimizers(self) -> Any:
        named = list(self.named_parameters())
        body = torch.optim.AdamW([p for name, p in named if not self._is_head(name)], lr=3e-3)
        head = torch.optim.SGD([p for name, p in named if self._is_head(name)], lr=0.1, momentum=0.9)
        return [body, head], [torch.optim.lr_scheduler.LambdaLR(body, self.schedule)]


class ManualTwoOptimizers(StopAndGoConformance, unittest.TestCase):
    """Manual optimization with two optimizers on a ResumableDataModule: Lightning's global step counts both
    optimizer steps of a batch, so 8 global steps are 4 batches of 4 samples."""

    num_steps, stop_step = 8, 4

    @classmethod
    def make_model(cls) -> pl.LightningModule:
        return TwoOptimizerGPT()

    @classmethod
    def make_datamodule(cls) -> pl.LightningDataModule:
        return SyntheticDataModule(micro_batch_size=4, global_batch_size=4)

    @classmethod
    def trainer_kwargs(cls) -> dict[str, Any]:
        return {"val_check_interval": 1, "limit_val_batches": 1}

    @classmethod
    def make_callbacks(cls) -> list[pl.Callback]:
        return []


class CountsOptimizerSteps(SyntheticDataModule):
    """Counts consumed samples by optimizer steps (Lightning's global step), as ResumableDataModule once did: right
    under automatic optimization, twice the samples trained under two manual optimizers."""

    def _batches_trained(self) -> int:
        trainer = getattr(self, "trainer", None)
        return 0 if trainer is None else int(trainer.global_step) * self.accumulate_grad_batches


class ManualTwoOptimizersCountingSteps(ManualTwoOptimizers):
    @classmethod
    def make_datamodule(cls) -> pl.LightningDataModule:
        return CountsOptimizerSteps(micro_batch_size=4, global_batch_size=4)


class TokenNoise(SyntheticTokens):
    """Synthetic tokens with 1 in 8 replaced by a random id as the sample is fetched, drawn from torch's global
    random stream in ``__getitem__`` (loaded in the main process)."""

    def noise(self, index: int) -> torch.Generator | None:
        """The generator the noise of sample ``index`` draws from; None: torch's global stream."""
        return None

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        sample = super().__getitem__(index)
        generator = self.noise(index)
        tokens = sample["tokens"]
        replaced = torch.rand(tokens.shape, generator=generator) < 0.125
        random_ids = torch.randint(0, self.vocab_size - 1, tokens.shape, generator=generator)
        return {**sample, "tokens": torch.where(replaced, random_ids, tokens)}


class SampleSeededTokenNoise(TokenNoise):
    """The same noise, drawn from a generator seeded by (seed, sample index)."""

    def noise(self, index: int) -> torch.Generator | None:
        return torch.Generator().manual_seed(self.seed * 7919 + index)


class NoisyTokensData(SyntheticDataModule):
    """The synthetic data module with token noise on its training samples."""

    noise_class: type[TokenNoise] = TokenNoise

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.train_set = self.noise_class(44, 16, 64, self.seed)


class SampleSeededNoisyTokensData(NoisyTokensData):
    noise_class = SampleSeededTokenNoise


class FetchTimeAugmentation(NoDropoutNoRNGRestore, StopAndGoConformance, unittest.TestCase):
    """Token noise drawn from the global stream as a batch is fetched, RNGStateCallback in the callbacks."""

    num_steps, stop_step = 6, 3

    @classmethod
    def make_datamodule(cls) -> pl.LightningDataModule:
        return NoisyTokensData()

    @classmethod
    def make_callbacks(cls) -> list[pl.Callback]:
        return [RNGStateCallback()]


class SampleSeededAugmentation(FetchTimeAugmentation):
    @classmethod
    def make_datamodule(cls) -> pl.LightningDataModule:
        return SampleSeededNoisyTokensData()


class ElasticWithPerRankDropout(StepSeededGPTRecipe, DDPGPTRecipe, StopAndGoConformance, unittest.TestCase):
    """The step-seeded GPT on 2 DDP ranks with its dropout on (each rank reseeds from the step and its rank),
    declaring an elastic resume on 1 rank: the one rank draws other masks."""

    num_steps, stop_step = 6, 3
    elastic_resume_world_sizes = (1,)


class WarmupEMAWithCheckpointState(EMAWithoutCheckpointState):
    """An EMA whose decay warms up with its update count, which it checkpoints with its shadow weights."""

    @classmethod
    def make_callbacks(cls) -> list[pl.Callback]:
        return [RNGStateCallback(), WarmupEMA()]
