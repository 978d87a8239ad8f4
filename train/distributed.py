"""Single process or ``torchrun --nproc_per_node=N``: the same code path, a context telling which.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them training runs in one process and
every collective below is a no-op. GPUs use NCCL (one device per local rank), CPUs use gloo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, validates, checkpoints and talks to MLflow."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


def init_distributed(device_name: str) -> tuple[DistContext, torch.device]:
    """Join the process group when launched by torchrun; returns the context and this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistContext(), pick_device(device_name)
    context = DistContext(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(device_name, context.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return context, device


def shutdown(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def mean_across_ranks(value: float, context: DistContext, device: torch.device) -> float:
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / context.world_size


def broadcast_flag(flag: bool, context: DistContext, device: torch.device) -> bool:
    """Rank 0's decision (for example: stop early) for every rank."""
    if not context.enabled:
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()
