"""The Hugging Face Trainer backend's reference recipe passes every applicable stop-and-go check (collected as it
is), and the backend's set-up errors name the hook and the fix."""

from __future__ import annotations

from tests.hf_support import require_transformers

require_transformers()

import unittest

from conformance import StopAndGoConformance
from conformance.report import run_classes
from conformance.runs.hf_trainer.backend import HF_TRAINER
from reference_models import certify_hf
from reference_models.certify_hf import TestGPT2TrainerStopAndGo  # noqa: F401 - collected by unittest and pytest
from reference_models.hf_trainer import make_trainer
from tests.toy_suite import SetupErrorAssertions, adopter


class TestTrainerBackend(unittest.TestCase):
    def test_make_trainer_chooses_the_backend_and_the_report_names_it(self) -> None:
        self.assertIs(certify_hf.TestGPT2TrainerStopAndGo.backend(), HF_TRAINER)
        report = run_classes([certify_hf.TestGPT2TrainerStopAndGo], checks=["test_global_step"])
        self.assertIn("TestGPT2TrainerStopAndGo\n  backend: Hugging Face Trainer\n", report.format_text())


class TestTrainerSetupErrors(SetupErrorAssertions):
    def test_every_settings_problem_at_once(self) -> None:
        cls = adopter(StopAndGoConformance, make_trainer=lambda output_dir, max_steps: None, num_ranks=2,
                      elastic_resume_world_sizes=(2,))
        self.assertSetupError(cls, "num_ranks must be 1", "elastic_resume_world_sizes is not supported",
                              "hook 'make_trainer' must be a @classmethod")

    def test_a_trainer_ignoring_max_steps_and_output_dir(self) -> None:
        cls = adopter(StopAndGoConformance, resume_in_fresh_process=False, make_trainer=classmethod(
            lambda cls, output_dir, max_steps: make_trainer(output_dir + "-elsewhere", 7)))
        self.assertSetupError(cls, "made a Trainer with max_steps=7: pass max_steps to TrainingArguments",
                              "pass output_dir to TrainingArguments(output_dir=output_dir)")

    def test_something_else_than_a_trainer(self) -> None:
        cls = adopter(StopAndGoConformance, resume_in_fresh_process=False,
                      make_trainer=classmethod(lambda cls, output_dir, max_steps: object()))
        self.assertSetupError(cls, "make_trainer(output_dir, max_steps) returned an object, not a transformers.Trainer")


if __name__ == "__main__":
    unittest.main()
