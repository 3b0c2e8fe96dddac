"""DataModuleResumeConformance on a Lightning data module (``make_datamodule()``): probe fits through
``lightning.Trainer`` (:mod:`conformance.runs.lightning.probe`), NeMo's MegatronStrategy as a refinement, and the data
module's state as Lightning checkpoints it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from conformance.runs.data_probe import MAX_STATE_BYTES, DataCapabilities, ProbeLog, ProbePlan, consumed_problems
from conformance.runs.lightning.backend import LIGHTNING
from conformance.runs.lightning.probe import run_probe, strategy_problems
from conformance.runs.processes import function_name
from conformance.training.checkpoints import load_checkpoint, saved_checkpoint

__all__ = ["LIGHTNING_DATA", "LightningDataBackend"]


class LightningDataBackend:
    """Probes a Lightning data module through real fits (see the module docstring)."""

    required_hooks: ClassVar[tuple[str, ...]] = ("make_datamodule",)
    not_applicable: ClassVar[Mapping[str, str]] = {}
    unreported_consumed_samples: ClassVar[str | None] = None

    def label(self, recipe: type) -> str:
        return LIGHTNING.label(recipe)

    def environment_label(self, recipe: type) -> str | None:
        return LIGHTNING.environment_label(recipe)

    def settings_problems(self, recipe: type) -> list[str]:
        """The trainer arguments' problems, and a strategy other than NeMo's MegatronStrategy without model
        parallelism (probe runs use the kit's own)."""
        problems = LIGHTNING.settings_problems(recipe)
        kwargs = recipe.trainer_kwargs()
        return problems + (strategy_problems(dict(kwargs)) if isinstance(kwargs, Mapping) else [])

    def recipe_problems(self, recipe: type) -> list[str]:
        return LIGHTNING.recipe_problems(recipe)

    def capabilities(self, recipe: type) -> DataCapabilities:
        datamodule = recipe.make_datamodule()
        global_batch_size = getattr(datamodule, "global_batch_size", None)
        elastic = getattr(datamodule, "supports_elastic_resume", None)
        return DataCapabilities(None if global_batch_size is None else int(global_batch_size),
                                None if elastic is None else bool(elastic),
                                restore_functions=own_restore_functions(type(datamodule)))

    def run_probe(self, recipe: type, plan: ProbePlan) -> list[ProbeLog]:
        return run_probe(recipe, plan)

    def checkpoint_state_problems(self, recipe: type, checkpoint: Path, step: int) -> list[str]:
        """The data module's state must be in the checkpoint, JSON-serialisable, small, and count step x batch."""
        datamodule = recipe.make_datamodule()
        state = _state(datamodule, checkpoint)
        if state is None:
            return [("no data-module state in the checkpoint (Lightning saves datamodule.state_dict() under the class "
                    "name, and only when it is non-empty)")]
        try:
            size = len(json.dumps(state))
        except (TypeError, ValueError) as exc:
            return [(f"the data-module state is not JSON-serialisable ({exc}); keep it to plain ints, floats, "
                    "strings, lists and dicts")]
        problems = []
        if size > MAX_STATE_BYTES:
            problems.append(f"the data-module state is {size} bytes as JSON; keep it under {MAX_STATE_BYTES} (store "
                            "positions, not sample lists)")
        return problems + consumed_problems(f"the checkpoint of step {step} holds", step,
                                            state.get("consumed_samples"), getattr(datamodule, "global_batch_size", None))

    def saved_consumed_samples(self, recipe: type, checkpoint: Path) -> Any:
        return (_state(recipe.make_datamodule(), checkpoint) or {}).get("consumed_samples")


def _state(datamodule: Any, checkpoint: Path) -> Any:
    """The data module's state in a checkpoint: Lightning keeps it under the class's qualified name."""
    return load_checkpoint(saved_checkpoint(checkpoint)).state.get(type(datamodule).__qualname__)


#: The one instance suites use.
LIGHTNING_DATA = LightningDataBackend()


def own_restore_functions(datamodule_class: type) -> frozenset[str]:
    """The ``load_state_dict`` methods the data module's own classes define (Lightning's and the kit's excluded)."""
    return frozenset(
        function_name(vars(cls)["load_state_dict"].__code__) for cls in datamodule_class.__mro__
        if "load_state_dict" in vars(cls) and hasattr(vars(cls)["load_state_dict"], "__code__")
        and cls.__module__.split(".", 1)[0] not in ("lightning", "pytorch_lightning", "conformance"))
