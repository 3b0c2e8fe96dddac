"""The NeMo 2 reference recipe (nl.MegatronStrategy) passes stop-and-go at TP=1 and at TP=2 over 2 rank
processes, on the CPU under the kit's emulation, which stays out of the test process and is named in the reports
(needs nemo-toolkit 2.7: ``tox -e nemo``)."""

from tests.megatron_support import require_nemo

require_nemo()

import os
import unittest
from typing import Any
from unittest import mock

import torch
from nemo import lightning as nl

from conformance import StopAndGoConformance
from conformance.errors import ConformanceSetupError
from conformance.runs.lightning.probe import strategy_problems
from conformance.runs.lightning.trainer import environment_label
from conformance.runs.nemo.cpu_emulation import LABEL, cuda_on_cpu
from conformance.runs.processes import RANK_PROCESS_ENV
from reference_models.certify_nemo import (  # noqa: F401 - collected as tests
    TestNeMoGPTStopAndGo,
    TestNeMoGPTTensorParallelStopAndGo,
)
from reference_models.megatron_recipes import MegatronGPTPredictionRecipe
from reference_models.nemo_data import NeMoSamplerDataModule
from reference_models.nemo_gpt import NeMoGPT, NeMoGPTRecipe


class TestCpuEmulation(unittest.TestCase):
    def test_it_refuses_to_start_in_the_test_process(self) -> None:
        self.assertNotIn(RANK_PROCESS_ENV, os.environ)
        with self.assertRaisesRegex(RuntimeError, "only in rank processes the kit launches"), cuda_on_cpu():
            pass

    def test_cuda_requests_get_the_cpu_inside_and_nothing_is_left_behind(self) -> None:
        current_device = torch.cuda.current_device
        with mock.patch.dict(os.environ, {RANK_PROCESS_ENV: "1"}), cuda_on_cpu():
            self.assertEqual(torch.zeros(2, device="cuda").device.type, "cpu")
            self.assertEqual(torch.ones(1).to("cuda").device.type, "cpu")
            self.assertEqual(torch.ones(1).cuda().device.type, "cpu")
            self.assertEqual(torch.cuda.current_device(), 0)
            self.assertEqual(torch.ones(1).type(), "torch.cuda.FloatTensor")
        self.assertIs(torch.cuda.current_device, current_device)
        self.assertEqual(torch.ones(1).type(), "torch.FloatTensor")
        with self.assertRaises((RuntimeError, AssertionError)):
            torch.zeros(2, device="cuda")

    def test_the_label_names_nemos_strategy_on_the_cpu_only(self) -> None:
        strategy = nl.MegatronStrategy()
        self.assertEqual(environment_label({"strategy": strategy}), LABEL)
        self.assertIsNone(environment_label({"strategy": strategy, "accelerator": "gpu"}))
        self.assertIsNone(environment_label({"strategy": "ddp"}))

    def test_the_prediction_suite_refuses_nemos_strategy_on_the_cpu(self) -> None:
        class NeMoPrediction(MegatronGPTPredictionRecipe):
            model_parallel_size = 1

            @classmethod
            def trainer_kwargs(cls) -> dict:
                return {"strategy": nl.MegatronStrategy()}

        from conformance import PredictionWriterConformance

        recipe = type("TestNeMoPrediction", (NeMoPrediction, PredictionWriterConformance, unittest.TestCase), {})
        with self.assertRaisesRegex(ConformanceSetupError, f"{LABEL}, which the kit runs for training only"):
            recipe.validate_settings()


class NeMoGPTWithoutLossReduction(NeMoGPT):
    """The NeMo GPT as a first draft might be: nothing reduces its per-token losses."""

    training_loss_reduction = None


class TestNeMoSetupMistakes(unittest.TestCase):
    """Each of these ended in a traceback from deep inside NeMo in every check (found by an outside NeMo recipe);
    now each is one ConformanceSetupError before anything trains."""

    def assertSetupError(self, phrase: str, **changes: Any) -> None:
        cls = type("TestBroken", (NeMoGPTRecipe, StopAndGoConformance, unittest.TestCase),
                   {name: classmethod(lambda cls, value=value: value()) for name, value in changes.items()})
        with self.assertRaises(ConformanceSetupError) as caught:
            cls.validate_recipe()
        self.assertIn(phrase, str(caught.exception))

    def test_tensor_parallelism_over_too_few_devices(self) -> None:
        self.assertSetupError("needs a multiple of 2 ranks", trainer_kwargs=lambda: {
            "devices": 1, "strategy": nl.MegatronStrategy(tensor_model_parallel_size=2, ckpt_async_save=False)})

    def test_an_asynchronous_checkpoint_save(self) -> None:
        self.assertSetupError("ckpt_async_save=False", trainer_kwargs=lambda: {"strategy": nl.MegatronStrategy()})

    def test_a_global_batch_the_micro_batches_do_not_divide(self) -> None:
        self.assertSetupError("global_batch_size 4, not a multiple of micro_batch_size 3", make_datamodule=lambda: (
            NeMoSamplerDataModule(micro_batch_size=3, global_batch_size=4)))

    def test_a_model_without_a_loss_reduction(self) -> None:
        self.assertSetupError("without training_loss_reduction", make_model=NeMoGPTWithoutLossReduction)


class TestDataModuleSuiteStrategy(unittest.TestCase):
    def test_only_nemos_strategy_without_model_parallelism_may_be_given(self) -> None:
        self.assertEqual(strategy_problems({"strategy": nl.MegatronStrategy()}), [])
        self.assertEqual(strategy_problems({}), [])
        [other] = strategy_problems({"strategy": "ddp"})
        self.assertIn("only NeMo's MegatronStrategy may be given", other)
        [model_parallel] = strategy_problems({"strategy": nl.MegatronStrategy(tensor_model_parallel_size=2)})
        self.assertIn("every model-parallel size 1", model_parallel)


if __name__ == "__main__":
    unittest.main()
