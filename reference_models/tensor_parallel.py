"""A Lightning strategy for Megatron-core tensor parallelism, each rank a process (the reference recipes').

Every rank holds a shard of the model, so nothing of Lightning's DDP applies: the model is not wrapped (DDP would
average different shards' gradients and broadcast rank 0's shard at set-up), each rank saves and loads its own
checkpoint file, and data is split over data-parallel ranks only (all tensor-parallel ranks of a replica read the
same batch). Megatron's groups are formed when the process group is (gloo on CPU, NCCL on GPUs), and its
model-parallel RNG tracker is seeded from the run's seed: Megatron's own on GPUs, the kit's CPU tracker otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.trainer.states import TrainerFn
from megatron.core import parallel_state, tensor_parallel

from conformance.runs.megatron.cpu_tracker import cpu_model_parallel_seed


class TensorParallelStrategy(DDPStrategy):
    """Megatron tensor parallelism of size ``tensor_parallel_size``; the job's ranks form as many data-parallel
    replicas as they fill (prediction), and exactly one replica when training (gradients are not averaged)."""

    def __init__(self, tensor_parallel_size: int = 1, **ddp_options: Any) -> None:
        super().__init__(**ddp_options)
        self.tensor_parallel_size = tensor_parallel_size

    def setup_environment(self) -> None:
        super().setup_environment()
        if self.world_size % self.tensor_parallel_size:
            raise ValueError(f"TensorParallelStrategy(tensor_parallel_size={self.tensor_parallel_size}) cannot split "
                             f"{self.world_size} ranks into tensor-parallel groups: use a multiple of it as devices")
        parallel_state.destroy_model_parallel()
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=self.tensor_parallel_size)
        if self.root_device.type == "cuda":
            tensor_parallel.model_parallel_cuda_manual_seed(torch.initial_seed())
        else:
            cpu_model_parallel_seed(torch.initial_seed())

    def setup(self, trainer: pl.Trainer) -> None:
        """Lightning's DDP set-up without the DDP wrapper and without broadcasting rank 0's weights."""
        self.accelerator.setup(trainer)
        self.precision_plugin.convert_module(self.model)
        self.model_to_device()
        if trainer.state.fn == TrainerFn.FITTING:
            if parallel_state.get_data_parallel_world_size() > 1:
                raise ValueError(f"TensorParallelStrategy trains one data-parallel replica: set devices="
                                 f"{self.tensor_parallel_size} (it has {self.world_size})")
            self.setup_optimizers(trainer)
        self.setup_precision_plugin()

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int]:
        return {"num_replicas": parallel_state.get_data_parallel_world_size(),
                "rank": parallel_state.get_data_parallel_rank()}

    def shard_path(self, filepath: str | Path) -> Path:
        """Where this rank's checkpoint shard lives: ``filepath`` on tensor-parallel rank 0, beside it otherwise."""
        rank = parallel_state.get_tensor_model_parallel_rank()
        path = Path(filepath)
        return path if rank == 0 else path.with_name(f"{path.name}.tp_rank{rank}")

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: str | Path,
                        storage_options: Any | None = None) -> None:
        if parallel_state.get_data_parallel_rank() == 0:
            self.checkpoint_io.save_checkpoint(checkpoint, self.shard_path(filepath), storage_options=storage_options)

    def load_checkpoint(self, checkpoint_path: str | Path) -> dict[str, Any]:
        return self.checkpoint_io.load_checkpoint(self.shard_path(checkpoint_path))

    def remove_checkpoint(self, filepath: str | Path) -> None:
        if parallel_state.get_data_parallel_rank() == 0:
            self.checkpoint_io.remove_checkpoint(self.shard_path(filepath))

    def teardown(self) -> None:
        super().teardown()
        parallel_state.destroy_model_parallel()
