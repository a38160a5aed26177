"""Process groups for torchrun (`torchrun --nproc-per-node N -m s1kernels.train` or `-m s1kernels.eval`)
and FSDP2 sharding; shared by the stages, so no stage imports another for it."""
from __future__ import annotations

import contextlib
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


def precision(bf16: bool, device: torch.device, world_size: int):
    """(FSDP2 MixedPrecisionPolicy or None, autocast context or nullcontext) for this run.

    Under FSDP with bf16: parameters are all-gathered and used in bf16, gradients are
    reduce-scattered in fp32 and the optimizer updates fp32 master shards; no autocast.
    In one process: fp32 parameters with bf16 autocast. fp32 runs get neither.
    """
    if not bf16:
        return None, contextlib.nullcontext()
    if world_size > 1:
        from torch.distributed.fsdp import MixedPrecisionPolicy

        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32), contextlib.nullcontext()
    return None, torch.autocast(device.type, dtype=torch.bfloat16)


def shard(model: torch.nn.Module, device: torch.device, mp_policy=None) -> torch.nn.Module:
    """FSDP2: `fully_shard` each decoder layer, then the root (embedding, final norm, lm_head).

    Works on a model on the meta device too (then `to_empty` allocates only the local shards).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    kw = dict(mesh=mesh, mp_policy=mp_policy or MixedPrecisionPolicy())
    for layer in model.layers:
        fully_shard(layer, **kw)
    fully_shard(model, **kw)
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
