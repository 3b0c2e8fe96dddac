"""Named tolerance profiles of the stop-and-go checks: how closely the values a resumed run computes (outputs,
losses, optimizer moments, final weights) must match the reference run's, by the hardware's numerics.

Every other compared stream (inputs, RNG states, global step, consumed samples, learning rates, LR scheduler
states) and the exact gate on the restored state are bit-exact under every profile: nondeterministic kernels change
none of them, so a difference there is a resume bug. A profile's envelope is scale-aware, ``atol + rtol *
|reference|`` per element; the first resumed optimizer step has an envelope of its own, since it starts from the
bit-identical restored state and only that step's kernels can add to it. Per-check ``tolerances`` and class-wide
``atol``/``rtol`` still override a profile.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COMPUTED_CHECKS", "TOLERANCE_PROFILES", "ToleranceProfile"]

#: The checks a profile loosens: they compare what floating-point kernels compute.
COMPUTED_CHECKS = frozenset({"test_train_outputs", "test_train_loss", "test_valid_outputs", "test_valid_loss",
                             "test_optimizer_state", "test_callback_state", "test_final_weights"})


@dataclass(frozen=True)
class ToleranceProfile:
    """One profile: when to use it, and its envelopes for the first resumed optimizer step and every later one."""

    name: str
    use: str
    atol: float
    rtol: float
    first_step_atol: float
    first_step_rtol: float

    def settings(self, check: str, *, first_step: bool = False) -> dict[str, float]:
        """The tolerance settings of a stop-and-go trajectory check: the envelope for a computed check (the first
        resumed step's where ``first_step``), exact for every other."""
        if check not in COMPUTED_CHECKS:
            return {"atol": 0.0, "rtol": 0.0}
        if first_step:
            return {"atol": self.first_step_atol, "rtol": self.first_step_rtol}
        return {"atol": self.atol, "rtol": self.rtol}

    def describe(self) -> str:
        """The profile in one phrase, as reports print it."""
        if not (self.atol or self.rtol or self.first_step_atol or self.first_step_rtol):
            return f"{self.name} (bit-exact)"
        return (f"{self.name} (computed values within {self.atol:g} + {self.rtol:g}·|reference|, on the first resumed "
                f"step {self.first_step_atol:g} + {self.first_step_rtol:g}·|reference|; all state exact)")


#: The profiles by name. ``strict`` is the default.
TOLERANCE_PROFILES: dict[str, ToleranceProfile] = {profile.name: profile for profile in (
    ToleranceProfile("strict", "CPUs, and GPUs with deterministic algorithms on: a correct resume repeats the "
                     "reference bit for bit", 0.0, 0.0, 0.0, 0.0),
    ToleranceProfile("gpu_fp32", "float32 training on GPUs whose kernels reduce in a varying order (atomics, split-K "
                     "GEMMs, NCCL's algorithm choice): each reduction may differ in its last bits (~1e-7 relative); "
                     "the first resumed step stays that close, later steps drift further (Adam turns the noise on a "
                     "parameter whose gradient is ~0, such as an attention key bias, into updates of the size of the "
                     "learning rate)", 1e-4, 1e-3, 1e-6, 1e-5),
    ToleranceProfile("gpu_bf16", "bfloat16/float16 mixed precision or TF32 on GPUs with nondeterministic kernels: "
                     "low-precision roundings turn last-bit differences into a few bfloat16 ulps (2**-8 relative "
                     "each)", 1e-2, 5e-2, 1e-4, 8e-3),
)}
