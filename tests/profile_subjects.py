"""The subjects of tests/test_tolerance_profiles.py: the tiny GPT with emulated GPU kernel nondeterminism under the
strict and the gpu_fp32 profile, and the stop-and-go mutants with the same noise under gpu_fp32 (classes at module
level: their fresh processes import them by name). Not collected."""

from __future__ import annotations

import unittest
from collections.abc import Mapping
from typing import Any, ClassVar

from conformance import StopAndGoConformance
from reference_models.emulated_nondeterminism import EmulatedKernelNoise, NoisyGPTRecipe
from reference_models.mutants import Mutant, mutant_class
from reference_models.mutants.stop_and_go import STOP_AND_GO_MUTANTS


class NoisyGPTStrict(NoisyGPTRecipe, StopAndGoConformance, unittest.TestCase):
    """One micro-batch per step, so that Lightning 2.4 (which resumes one batch early) resumes it exactly too."""

    datamodule_kwargs: ClassVar[Mapping[str, Any]] = {"global_batch_size": 4}
    num_steps, stop_step = 6, 3


class NoisyGPTOnGPUProfile(NoisyGPTStrict):
    tolerance_profile = "gpu_fp32"


#: The single-process mutants of a resume bug (not of reproducibility, the checkpoint format or an empty run).
_RESUME_BUGS = ("rng_not_restored", "reseeds_from_uncheckpointed_counter", "lr_scheduler_not_restored",
                "datamodule_restarts_from_zero", "optimizer_state_lost", "adam_second_moments_lost",
                "init_global_step_forgotten", "validation_shifts_after_resume", "loop_state_dropped",
                "module_level_state")


def _noisy(mutant: Mutant) -> Mutant:
    """``mutant`` with emulated kernel noise, certified under the gpu_fp32 profile."""
    base = mutant.conformance_class

    def make_callbacks(cls: type) -> list[Any]:
        return [*base.make_callbacks(), EmulatedKernelNoise()]

    conformance_class = mutant_class(f"noisy_{mutant.name}", base, StopAndGoConformance, __name__,
                                     make_callbacks=make_callbacks, tolerance_profile="gpu_fp32")
    return Mutant(f"noisy_{mutant.name}", mutant.bug, conformance_class, mutant.kills, mutant.may_also_fail,
                  mutant.skips, mutant.harmless_here)


NOISY_MUTANTS: tuple[Mutant, ...] = tuple(_noisy(mutant) for mutant in STOP_AND_GO_MUTANTS
                                          if mutant.name in _RESUME_BUGS)


class DeterministicGPT(NoisyGPTStrict):
    """The tiny GPT without the noise, in deterministic mode."""

    deterministic_mode = True

    @classmethod
    def make_callbacks(cls) -> list[Any]:
        return [cb for cb in super().make_callbacks() if not isinstance(cb, EmulatedKernelNoise)]
