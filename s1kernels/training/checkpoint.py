"""Atomic sharded training checkpoints (torch.distributed.checkpoint) and the HF-format export.

A training checkpoint `<dir>/step-N` holds:

    .metadata, __<rank>_0.distcp   DCP: model and optimizer state; each rank writes its own shards
    rng-<rank>.pt                  Python, NumPy, torch (and CUDA) RNG state of each rank
    scheduler.pt                   learning-rate scheduler state
    trainer_state.json             step, total_steps, rows_per_step, world_size, seed
    config.json, tokenizer files   what `export_checkpoint` needs to write an HF model folder

It is written into `<dir>/.tmp-step-N`; every file is fsynced (DCP syncs the files it writes,
each rank its own), all ranks meet at a barrier, then rank 0 renames the folder to `step-N`
(rename is atomic) and fsyncs the parent. A kill at any moment leaves either the previous
complete checkpoint or the new one; `latest_checkpoint` ignores leftovers of an interrupted
write. Older checkpoints beyond `keep` are removed only after the new one is in place.
On resume each rank reads only the rows it holds; DCP reshards when the world size differs.
One process uses the same format (DCP needs no process group).

The final model is exported as an HF folder by gathering one parameter at a time
(`export_model`), so no rank ever holds the whole model; `export_checkpoint` (also
`python -m s1kernels.training.checkpoint STEP_DIR OUT`) turns a training checkpoint into one.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import warnings

import numpy as np
import torch
import torch.distributed as dist

from s1kernels.model import ModelConfig, Transformer
from s1kernels.model.checkpoint import hf_name, write_weights

_STEP_RE = re.compile(r"^step-(\d+)$")
# the size cap of one output safetensors file (what transformers' save_pretrained uses)
EXPORT_SHARD_BYTES = 5 * 10**9


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


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def _dcp(fn, state: dict, path: str, no_dist: bool | None = None) -> None:
    """dcp.save / dcp.load of `state` at `path`, collective when a process group is up."""
    with warnings.catch_warnings():
        # one process is a supported use here, not the mistake DCP warns about
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        fn(state, checkpoint_id=path, no_dist=not _distributed() if no_dist is None else no_dist)


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


def _save_synced(obj, path: str) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(ckpt_dir: str, step: int, model, optimizer, scheduler, trainer_state: dict,
                    write_extra=None, keep: int = 1) -> str | None:
    """Writes step-`step` atomically (every rank must call). Returns its path on rank 0.

    `write_extra(folder)` (rank 0) adds files (config.json, tokenizer) before the rename.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    rank = _rank()
    final = os.path.join(ckpt_dir, f"step-{step}")
    tmp = os.path.join(ckpt_dir, f".tmp-step-{step}")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    _barrier()
    model_state, optim_state = get_state_dict(model, optimizer)  # sharded: each rank's own DTensor shards
    _dcp(dcp.save, {"model": model_state, "optim": optim_state}, tmp)
    _save_synced(rng_state(), os.path.join(tmp, f"rng-{rank}.pt"))
    if rank == 0:
        _save_synced(scheduler.state_dict(), os.path.join(tmp, "scheduler.pt"))
        with open(os.path.join(tmp, "trainer_state.json"), "w") as f:
            json.dump(dict(trainer_state, step=step), f, indent=1)
        if write_extra is not None:
            write_extra(tmp)
    _barrier()  # every rank's files are on disk
    if rank == 0:
        fsync_tree(tmp)
        if os.path.exists(final):  # a re-run that reaches the same step replaces it
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(ckpt_dir)
        for old in list_checkpoints(ckpt_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final if rank == 0 else None


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


def read_trainer_state(path: str) -> dict:
    """trainer_state.json of a checkpoint; ValueError when `path` is not a complete DCP checkpoint."""
    for name in ("trainer_state.json", ".metadata"):
        if not os.path.isfile(os.path.join(path, name)):
            raise ValueError(f"checkpoint: {path!r} has no {name} (expected a step-N folder written by "
                             f"s1kernels.train)")
    with open(os.path.join(path, "trainer_state.json")) as f:
        return json.load(f)


def load_checkpoint(path: str, model, optimizer, scheduler) -> dict:
    """Restores model, optimizer, scheduler and this rank's RNG from `path`; returns the trainer state.

    A checkpoint from another world size loads too (DCP reshards); the RNG state of a rank the
    writing run did not have is left as it is.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    trainer_state = read_trainer_state(path)
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    _dcp(dcp.load, state, path)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    scheduler.load_state_dict(torch.load(os.path.join(path, "scheduler.pt"), weights_only=False))
    rng = os.path.join(path, f"rng-{_rank()}.pt")
    if os.path.isfile(rng):
        set_rng_state(torch.load(rng, weights_only=False))
    return trainer_state


def _out_dtype(t: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    return dtype if dtype is not None and t.is_floating_point() else t.dtype


def _write_folder(folder: str, config: ModelConfig, tok, dtype, sizes: dict, tensors, max_shard_bytes) -> None:
    """config.json + safetensors weights + tokenizer + generation_config.json into `folder`."""
    os.makedirs(folder, exist_ok=True)
    write_weights(folder, sizes, tensors, max_shard_bytes)
    hf = config.to_hf_dict()
    hf["torch_dtype"] = str(dtype or torch.float32).replace("torch.", "")
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)
    tok.save(folder)
    with open(os.path.join(folder, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": tok.eos_ids, "pad_token_id": tok.pad_id, "bos_token_id": None}, f, indent=2)


def export_model(model, folder: str, tok, dtype: torch.dtype | None = None,
                 max_shard_bytes: int | None = EXPORT_SHARD_BYTES) -> None:
    """Writes the HF-format model folder (rank 0 writes; every rank must call).

    Parameters are gathered one at a time (`DTensor.full_tensor()` on every rank, after the
    cast to `dtype`); rank 0 keeps only the tensors of the output file it is filling.
    """
    from torch.distributed.tensor import DTensor

    rank0 = _rank() == 0
    params = [(hf_name(n), p) for n, p in model.named_parameters()]
    sizes = {name: p.numel() * _out_dtype(p, dtype).itemsize for name, p in params}

    def gathered():
        for _, p in params:
            t = p.detach().to(_out_dtype(p, dtype))
            if isinstance(t, DTensor):
                t = t.full_tensor()  # a collective: every rank takes part
            yield t.to("cpu") if rank0 else None

    if rank0:
        _write_folder(folder, model.config, tok, dtype, sizes, gathered(), max_shard_bytes)
    else:
        for _ in gathered():
            pass


def publish_final(output: str, model, tok, dtype: torch.dtype | None = None,
                  max_shard_bytes: int | None = EXPORT_SHARD_BYTES) -> None:
    """Exports into `output`/.tmp-final, then moves each file into `output` (every rank must call)."""
    tmp = os.path.join(output, ".tmp-final")
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    export_model(model, tmp, tok, dtype, max_shard_bytes)
    if _rank() == 0:
        fsync_tree(tmp)
        new = set(os.listdir(tmp))
        # weight files of an earlier export that this one does not overwrite (an index next to
        # a single file would win over it when loading)
        for name in os.listdir(output):
            if name not in new and (name.endswith(".safetensors") or name.endswith(".safetensors.index.json")):
                os.remove(os.path.join(output, name))
        for name in new:
            os.replace(os.path.join(tmp, name), os.path.join(output, name))
        os.rmdir(tmp)
        fsync_dir(output)
    _barrier()


def export_checkpoint(path: str, output: str, dtype: torch.dtype | None = None,
                      max_shard_bytes: int | None = EXPORT_SHARD_BYTES) -> None:
    """HF-format model folder from training checkpoint `path` (one process, any world size wrote it).

    Reads one parameter at a time from the DCP files, so memory stays at about one output file.
    """
    import torch.distributed.checkpoint as dcp

    from s1kernels.data import S1Tokenizer

    read_trainer_state(path)
    config = ModelConfig.from_json(path)
    tok = S1Tokenizer.from_folder(path)
    with torch.device("meta"):
        params = list(Transformer(config).named_parameters())
    sizes = {hf_name(n): p.numel() * _out_dtype(p, dtype).itemsize for n, p in params}

    def tensors():
        for name, p in params:
            t = torch.empty(p.shape, dtype=_out_dtype(p, dtype))
            _dcp(dcp.load, {"model": {name: t}}, path, no_dist=True)  # casts while reading
            yield t

    _write_folder(output, config, tok, dtype, sizes, tensors(), max_shard_bytes)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m s1kernels.training.checkpoint",
                                description="Write the HF-format model folder of a training checkpoint.")
    p.add_argument("checkpoint", help="a step-N folder under <output>/checkpoints")
    p.add_argument("output", help="folder for config.json, safetensors weights and the tokenizer")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="bfloat16")
    p.add_argument("--max-shard-gb", type=float, default=EXPORT_SHARD_BYTES / 1e9,
                   help="size cap of one safetensors file")
    args = p.parse_args(argv)
    export_checkpoint(args.checkpoint, args.output, getattr(torch, args.dtype), int(args.max_shard_gb * 1e9))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
