"""Generation sharded over the ranks of a process group (`torchrun ... -m s1kernels.eval`).

Each rank generates every `world_size`-th prompt (round-robin, so long and short prompts
spread evenly) with its own copy of the model, then the results are gathered so that every
rank holds all of them in the original order. A scalar sampling seed is expanded to the
per-prompt seeds a single process would use (`seed + i` for prompt `i`) before the split,
so each row's output does not depend on how many ranks ran.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist

from s1kernels import generate as _generate

__all__ = ["generate_sharded", "rank_and_world"]


def rank_and_world() -> tuple[int, int]:
    """(rank, world_size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def generate_sharded(model, tokenizer, prompts, budget=None, sampling=None, *, generate_fn=None, **kwargs):
    """`s1kernels.generate.generate` (or `generate_fn`) over this rank's share of `prompts`;
    returns every result, in order. Without a process group (or with one rank) it is
    `generate` itself."""
    generate_fn = generate_fn or _generate.generate
    prompts = list(prompts)
    rank, world = rank_and_world()
    if world == 1:
        return generate_fn(model, tokenizer, prompts, budget=budget, sampling=sampling, **kwargs)
    n = len(prompts)
    if sampling is not None:
        seed = sampling.seed
        if isinstance(seed, int) or (torch.is_tensor(seed) and seed.dim() == 0):
            sampling = dataclasses.replace(sampling, seed=[int(seed) + i for i in range(n)])
    mine = list(range(rank, n, world))
    local = []
    if mine:
        b = _generate._slice_rows(budget, mine, n) if budget is not None else None
        s = _generate._slice_rows(sampling, mine, n) if sampling is not None else None
        local = generate_fn(model, tokenizer, [prompts[i] for i in mine], budget=b, sampling=s, **kwargs)
    gathered: list = [None] * world
    dist.all_gather_object(gathered, list(zip(mine, local)))
    results: list = [None] * n
    for part in gathered:
        for i, res in part:
            results[i] = res
    return results
