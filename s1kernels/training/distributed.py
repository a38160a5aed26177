"""Process-group setup and FSDP2 sharding for `torchrun --nproc-per-node N -m s1kernels.train`."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment (0, 0, 1 without it)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init(device_kind: str | None = None) -> tuple[torch.device, int, int]:
    """Initialises the process group when launched by torchrun; returns (device, rank, world_size).

    NCCL on CUDA, gloo on CPU. Without torchrun nothing is initialised.
    """
    rank, local_rank, world_size = world()
    use_cuda = torch.cuda.is_available() if device_kind is None else device_kind == "cuda"
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return device, rank, world_size


def shard(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """FSDP2: `fully_shard` each decoder layer, then the root (embedding, final norm, lm_head)."""
    from torch.distributed.device_mesh import init_device_mesh

    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # torch < 2.6
        from torch.distributed._composable.fsdp import fully_shard
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for layer in model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
