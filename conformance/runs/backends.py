"""Which backend runs a recipe, chosen once per class from the hooks the recipe defines."""

from __future__ import annotations

import inspect

from conformance.runs.backend import Backend

__all__ = ["backend_for"]


def backend_for(recipe: type) -> Backend:
    """The loop backend for a recipe defining ``make_training_state`` (the kit drives its loop), the Hugging Face
    Trainer backend for one defining ``make_trainer`` (its Trainer drives the loop), the attached backend for one
    defining ``run_training`` (its own trainer drives the loop), otherwise the Lightning backend (``make_model`` and
    ``make_datamodule``; NeMo's strategy is a refinement of it)."""
    if inspect.getattr_static(recipe, "run_training", None) is not None:
        from conformance.runs.attached.backend import ATTACHED

        return ATTACHED
    if inspect.getattr_static(recipe, "make_trainer", None) is not None:
        from conformance.runs.hf_trainer.backend import HF_TRAINER

        return HF_TRAINER
    if inspect.getattr_static(recipe, "make_training_state", None) is not None:
        from conformance.runs.loop.backend import LOOP

        return LOOP
    from conformance.runs.lightning.backend import LIGHTNING

    return LIGHTNING
