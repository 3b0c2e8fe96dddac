"""The reference recipe of the loop backend with Lightning Fabric: the tiny GPT set up by ``fabric.setup``, its
checkpoint written by ``fabric.save`` and read by ``fabric.load`` (the recipe's own ``save_state``/``load_state``,
one file), the loader a torchdata ``StatefulDataLoader`` whose state goes into that file. List the mixin before
:class:`conformance.StopAndGoConformance`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.fabric import Fabric

from conformance import TrainingState
from reference_models.torch_loop import GPTLoopRecipe

__all__ = ["FabricGPTRecipe", "FabricTrainingState"]


@dataclass
class FabricTrainingState(TrainingState):
    """The training state and the Fabric object that set it up."""

    fabric: Fabric | None = field(default=None, repr=False)


class FabricGPTRecipe(GPTLoopRecipe):
    """The loop GPT recipe with its model and optimizer set up by a one-device CPU Fabric."""

    @classmethod
    def make_training_state(cls) -> FabricTrainingState:
        plain = GPTLoopRecipe.make_training_state.__func__(cls)  # type: ignore[attr-defined]
        fabric = Fabric(accelerator="cpu", devices=1)
        model, optimizer = fabric.setup(plain.model, plain.optimizers[0])
        return FabricTrainingState(model=model, optimizers=[optimizer], train_loader=plain.train_loader,
                                   lr_schedulers=plain.lr_schedulers, val_loader=plain.val_loader,
                                   stateful=plain.stateful, fabric=fabric)

    @classmethod
    def checkpoint_state(cls, state: FabricTrainingState) -> dict[str, Any]:
        """What ``fabric.save`` writes: Fabric turns the module and the optimizer into their state dicts."""
        return {"model": state.model, "optimizer": state.optimizers[0], "scheduler": state.lr_schedulers[0],
                "loader": state.train_loader, "rng": state.stateful["rng"],
                "loop": {"step": state.step, "epoch": state.epoch}}

    @classmethod
    def save_state(cls, state: FabricTrainingState, directory: Path) -> None:
        assert state.fabric is not None
        state.fabric.save(directory, cls.checkpoint_state(state))

    @classmethod
    def load_state(cls, state: FabricTrainingState, directory: Path) -> None:
        assert state.fabric is not None
        restored = cls.checkpoint_state(state)
        state.fabric.load(directory, restored)  # objects in place, plain values into the dict
        state.step, state.epoch = restored["loop"]["step"], restored["loop"]["epoch"]
