"""The processes one PPO run is spread over: data parallelism through accelerate, or one process.

A notebook or `labkit run` is one process and needs none of this: `Processes()` answers as one
process would and gathers nothing. Under `accelerate launch` (or torchrun) each process samples
and scores its own share of the rollout batch; `gather` then hands every process the whole batch,
so advantage whitening, the KL and the adaptive-KL update see exactly what one process would; the
update splits each minibatch across the processes and DDP averages their gradients.

Two ways to hold the weights (`PPOConfig.parallelism`):

    ddp   every process holds the whole model; DistributedDataParallel averages the gradients.
          Right for LoRA, whose trainable weights are small, and for any model one device holds.
    fsdp  every weight, gradient and optimizer state is split across the processes (FSDP2's
          `fully_shard`, one group per decoder layer): full fine-tuning of a model no one device
          holds. The frozen reference and a separate critic are sharded the same way. Each forward
          pass gathers a layer's weights just in time, so every process must make the same passes:
          sampling stops only when every process's replies have ended.

On a CPU-only machine `accelerate launch --multi_gpu --num_processes 2 ...` starts the processes
(torch.distributed.run, gloo); accelerate's `--cpu` with several processes needs mpirun instead.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
from torch import nn

__all__ = ["Processes", "full_tensor", "launched", "make_accelerator", "set_full"]


def launched() -> bool:
    """True inside a process started by `accelerate launch`/torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def make_accelerator():
    """An `accelerate.Accelerator` for this process. Launched on several processes without a CUDA GPU,
    it is told to use the CPU: accelerate would otherwise fall back to one process (`--multi_gpu` with
    no GPU), and gloo carries the collectives."""
    from accelerate import Accelerator

    return Accelerator(cpu=launched() and not torch.cuda.is_available())


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor on the CPU: a sharded weight (a DTensor) is gathered, which every process must call."""
    if hasattr(tensor, "full_tensor"):
        tensor = tensor.full_tensor()
    return tensor.detach().cpu().contiguous()


@torch.no_grad()
def set_full(target: torch.Tensor, full: torch.Tensor) -> None:
    """Copy a whole tensor into `target`, or into this process's shard of it when `target` is sharded."""
    if hasattr(target, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        full = distribute_tensor(full.to(target.device, target.dtype), target.device_mesh, target.placements)
    target.copy_(full)


class Processes:
    """Rank, size and the few collective operations PPO needs; every method works in one process too."""

    def __init__(self, accelerator: Any = None):
        self.accelerator = accelerator
        self.rank = accelerator.process_index if accelerator is not None else 0
        self.size = accelerator.num_processes if accelerator is not None else 1

    @classmethod
    def for_run(cls, accelerator: Any = None) -> Processes:
        """`accelerator` if given; a new `accelerate.Accelerator` when launched on several processes; else one."""
        if accelerator is None and launched():
            accelerator = make_accelerator()
        return cls(accelerator)

    @property
    def is_main(self) -> bool:
        """The process that writes files, prints and calls the callbacks."""
        return self.rank == 0

    @property
    def device(self) -> torch.device | None:
        """The device accelerate assigned this process, or None (one process: the model's own device)."""
        return self.accelerator.device if self.accelerator is not None else None

    def rows(self, batch_size: int) -> slice:
        """The contiguous rows of a global batch that this process samples, scores and evaluates."""
        if batch_size % self.size:
            raise ValueError(
                f"batch_size ({batch_size}) must be a multiple of the number of processes ({self.size}): "
                "each process takes an equal share of the batch"
            )
        share = batch_size // self.size
        return slice(self.rank * share, (self.rank + 1) * share)

    def gather(self, tensor: torch.Tensor, pad_value: float = 0, pad_first: bool = False) -> torch.Tensor:
        """Every process's rows, in rank order; a second dimension of different widths is padded first
        (on the left with `pad_first`, as left-padded prompts are)."""
        if self.size == 1:
            return tensor
        dtype = tensor.dtype
        if dtype == torch.bool:  # gloo gathers no bools
            tensor = tensor.long()
        if tensor.dim() > 1:
            tensor = self.accelerator.pad_across_processes(tensor, dim=1, pad_index=pad_value, pad_first=pad_first)
        return self.accelerator.gather(tensor.contiguous()).to(dtype)

    def gather_objects(self, items: list) -> list:
        """Every process's list, concatenated in rank order."""
        if self.size == 1:
            return list(items)
        from accelerate.utils import gather_object

        return gather_object(list(items))

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The elementwise sum over processes."""
        if self.size == 1:
            return tensor
        return self.accelerator.reduce(tensor.clone(), reduction="sum")

    def wait(self) -> None:
        """Every process reaches this line before any goes on."""
        if self.size > 1:
            self.accelerator.wait_for_everyone()

    def all(self, flag: bool) -> bool:
        """True when `flag` is true in every process."""
        if self.size == 1:
            return flag
        device = self.accelerator.device
        return int(self.sum(torch.tensor([int(flag)], device=device)).item()) == self.size

    def shard(self, model: nn.Module) -> None:
        """Split `model`'s weights across the processes in place (FSDP2): one group per decoder layer
        (the classes the model names in `_no_split_modules`, else each child of a ModuleList), then the rest."""
        if self.size == 1:
            return
        from torch.distributed.fsdp import fully_shard

        names = set(getattr(model, "_no_split_modules", None) or ())
        if names:
            layers = [m for m in model.modules() if type(m).__name__ in names]
        else:
            layers = [child for m in model.modules() if isinstance(m, nn.ModuleList) for child in m]
        for layer in layers:
            fully_shard(layer)
        fully_shard(model)

    def wrap(self, module: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
        """`module` in DistributedDataParallel (gradients averaged over processes on backward), or itself."""
        if self.size == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device = self.accelerator.device
        ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters)

    @staticmethod
    def no_sync(module: nn.Module):
        """Inside it, backward accumulates gradients without averaging them (all but the last micro-batch)."""
        return module.no_sync() if hasattr(module, "no_sync") else contextlib.nullcontext()
