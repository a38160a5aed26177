"""Atomic training checkpoints: model (HF safetensors), optimizer, scheduler, data position, RNG.

A checkpoint is written into `<dir>/.tmp-step-N`, every file is fsynced, and the folder is
renamed to `<dir>/step-N` (rename is atomic), then the parent folder is fsynced. A kill at any
moment leaves either the previous complete checkpoint or the new one; `latest_checkpoint`
ignores leftovers of an interrupted write. Older checkpoints beyond `keep` are removed only
after the new one is in place.

With FSDP the full (unsharded) state is gathered to rank 0, which alone writes; on resume
every rank reads the full state and keeps its shard.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file

from s1kernels.model.checkpoint import hf_name, our_name

_STEP_RE = re.compile(r"^step-(\d+)$")


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str) -> None:
    for root, _, files in os.walk(path):
        for f in files:
            with open(os.path.join(root, f), "rb+") as fh:
                os.fsync(fh.fileno())
        fsync_dir(root)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def full_model_state(model) -> dict[str, torch.Tensor]:
    """Full, CPU state dict of the model (gathered from all ranks under FSDP; rank 0 holds it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_optim_state(model, optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_hf_weights(state: dict[str, torch.Tensor], folder: str, dtype: torch.dtype | None = None) -> None:
    """model.safetensors with HF names from one of our full state dicts."""
    tensors = {}
    for k, v in state.items():
        if k == "inv_freq":
            continue
        t = v.detach().to("cpu")
        tensors[hf_name(k)] = (t.to(dtype) if dtype is not None and t.is_floating_point() else t).contiguous()
    save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})


def read_hf_weights(folder: str) -> dict[str, torch.Tensor]:
    with safe_open(os.path.join(folder, "model.safetensors"), framework="pt") as f:
        return {our_name(k): f.get_tensor(k) for k in f.keys()}


def save_checkpoint(ckpt_dir: str, step: int, model, optimizer, scheduler, trainer_state: dict,
                    write_extra=None, keep: int = 1) -> str | None:
    """Writes step-`step` atomically (rank 0 writes; all ranks must call). Returns its path on rank 0.

    `write_extra(folder)` adds files (config.json, tokenizer) into the folder before the rename.
    """
    model_state = full_model_state(model)
    optim_state = full_optim_state(model, optimizer)
    final = os.path.join(ckpt_dir, f"step-{step}")
    if _rank() == 0:
        os.makedirs(ckpt_dir, exist_ok=True)
        tmp = os.path.join(ckpt_dir, f".tmp-step-{step}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        write_hf_weights(model_state, tmp)
        torch.save({"optimizer": optim_state, "scheduler": scheduler.state_dict(), "rng": rng_state()},
                   os.path.join(tmp, "training_state.pt"))
        with open(os.path.join(tmp, "trainer_state.json"), "w") as f:
            json.dump(dict(trainer_state, step=step), f, indent=1)
        if write_extra is not None:
            write_extra(tmp)
        fsync_tree(tmp)
        if os.path.exists(final):  # a re-run that reaches the same step replaces it
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(ckpt_dir)
        for old in list_checkpoints(ckpt_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final if _rank() == 0 else None


def list_checkpoints(ckpt_dir: str) -> list[str]:
    """Complete checkpoints, oldest first (unfinished .tmp-* folders are ignored)."""
    if not os.path.isdir(ckpt_dir):
        return []
    found = []
    for name in os.listdir(ckpt_dir):
        m = _STEP_RE.match(name)
        path = os.path.join(ckpt_dir, name)
        if m and os.path.isfile(os.path.join(path, "trainer_state.json")):
            found.append((int(m.group(1)), path))
    return [p for _, p in sorted(found)]


def latest_checkpoint(ckpt_dir: str) -> str | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def load_checkpoint(path: str, model, optimizer, scheduler) -> dict:
    """Restores model, optimizer, scheduler and RNG from `path`; returns the trainer state."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True)
    weights = read_hf_weights(path)
    set_model_state_dict(model, weights, options=opts)
    extra = torch.load(os.path.join(path, "training_state.pt"), map_location="cpu", weights_only=False)
    set_optimizer_state_dict(model, optimizer, extra["optimizer"], options=opts)
    scheduler.load_state_dict(extra["scheduler"])
    set_rng_state(extra["rng"])
    with open(os.path.join(path, "trainer_state.json")) as f:
        return json.load(f)
