"""Sharded training checkpoints (torch.distributed.checkpoint) that no sequence of kills can
lose or mix, and nothing in which can run code.

A training checkpoint `<dir>/step-N` (or `step-N.K` when step N was saved before) holds:

    .metadata, __<rank>_0.distcp   DCP: model and optimizer state; each rank writes its own shards
    rng-<rank>.safetensors         Python, NumPy, torch (and CUDA) RNG state of each rank
    scheduler.json                 learning-rate scheduler state
    trainer_state.json             step, the run's identity and settings (written last)
    config.json, tokenizer files   what `export_checkpoint` needs to write an HF model folder

Saving: everything is written into `<dir>/.tmp-<run>-step-N` and fsynced; all ranks meet at
a barrier; rank 0 renames the folder to a name no folder has yet (a re-save of step N never
deletes step N first), then replaces the pointer file `<dir>/latest` atomically, and only
then deletes what rotation drops. Rotation only looks at checkpoints whose trainer_state
names this run; a deletion first renames the folder to `.del-*`, so a kill mid-delete never
leaves a folder that looks complete. So at every instant `latest_checkpoint` names a
complete checkpoint: the previous one until the pointer moves, the new one after.

Loading reads no pickle: DCP's `.metadata` goes through a restricted unpickler and
non-tensor entries through `torch.load(weights_only=True)` (see `safe_state`).
On resume each rank reads only the rows it holds; DCP reshards when the world size differs.
One process uses the same format (DCP needs no process group).

`export_checkpoint` (also `python -m s1kernels.convert --checkpoint STEP_DIR --output OUT`) turns a
checkpoint into an HF model folder, published atomically like the final model.
"""
from __future__ import annotations

import os
import re
import shutil
import uuid
import warnings

import torch
import torch.distributed as dist

from s1kernels.model import ModelConfig, Transformer
from s1kernels.model.checkpoint import hf_name
from s1kernels.train import safe_state
from s1kernels import checks
from s1kernels.checks import read_json
from s1kernels.train.files import fsync_dir, fsync_tree, remove_tree, replace_atomic, write_json_synced
from s1kernels.train.publish import (EXPORT_SHARD_BYTES, commit, export_model, out_dtype,  # noqa: F401
                                        publish_final, stage, write_folder)

_STEP_RE = re.compile(r"^step-(\d+)(?:\.(\d+))?$")
LATEST = "latest"
TRAINER_STATE = "trainer_state.json"


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def _dcp_save(state: dict, path: str) -> None:
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        # one process is a supported use here, not the mistake DCP warns about
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(state, checkpoint_id=path, no_dist=not _distributed())


def dcp_load(state: dict, path: str, no_dist: bool | None = None) -> None:
    """dcp.load of `state` from `path` through the pickle-free reader and planner."""
    import torch.distributed.checkpoint as dcp

    from torch.distributed.checkpoint.api import CheckpointException

    md = safe_state.read_dcp_metadata(os.path.join(path, ".metadata"))  # refuses a planted pickle by name
    safe_state.check_storage_paths(md, path)  # and data files outside the checkpoint
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, storage_reader=safe_state.SafeReader(path), planner=safe_state.SafePlanner(),
                     no_dist=not _distributed() if no_dist is None else no_dist)
    except CheckpointException as e:  # a BaseException that wraps each rank's failure
        failures = [f[0] if isinstance(f, tuple) else f for f in e.failures.values()]
        for f in failures:
            if not isinstance(f, Exception):  # KeyboardInterrupt and the like stay what they are
                raise f
        named = [f for f in failures if isinstance(f, ValueError)]
        if named:
            raise named[0] from None
        first = failures[0] if failures else e
        raise ValueError(f"checkpoint: {path!r} could not be read ({type(first).__name__}: {first})") from None


def _tmp_name(run_id: str, step: int) -> str:
    return f".tmp-{run_id[:12]}-step-{step}"


def _free_name(ckpt_dir: str, step: int) -> str:
    name, k = f"step-{step}", 0
    while os.path.lexists(os.path.join(ckpt_dir, name)):
        k += 1
        name = f"step-{step}.{k}"
    return name


def save_checkpoint(ckpt_dir: str, step: int, model, optimizer, scheduler, trainer_state: dict,
                    write_extra=None, keep: int = 1) -> str | None:
    """Writes step `step` (every rank must call); returns its path on rank 0.

    `trainer_state` must hold `run_id`. `write_extra(folder)` (rank 0) adds files (config.json,
    tokenizer) before the folder is published. `keep` > 0 keeps that many of this run's newest
    checkpoints (0: all).
    """
    from torch.distributed.checkpoint.state_dict import get_state_dict

    run_id = trainer_state["run_id"]
    rank = _rank()
    tmp = os.path.join(ckpt_dir, _tmp_name(run_id, step))
    if rank == 0:
        os.makedirs(ckpt_dir, exist_ok=True)
        if os.path.lexists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
    _barrier()
    model_state, optim_state = get_state_dict(model, optimizer)  # sharded: each rank's own DTensor shards
    _dcp_save({"model": model_state, "optim": optim_state}, tmp)
    safe_state.save_rng(os.path.join(tmp, f"rng-{rank}.safetensors"))
    if rank == 0:
        safe_state.save_scheduler(os.path.join(tmp, "scheduler.json"), scheduler)
        if write_extra is not None:
            write_extra(tmp)
        write_json_synced(os.path.join(tmp, TRAINER_STATE), dict(trainer_state, step=step))
    _barrier()  # every rank's files are on disk
    final = None
    if rank == 0:
        fsync_tree(tmp)
        name = _free_name(ckpt_dir, step)
        final = os.path.join(ckpt_dir, name)
        os.rename(tmp, final)
        fsync_dir(ckpt_dir)
        replace_atomic(os.path.join(ckpt_dir, LATEST), (name + "\n").encode())
        rotate(ckpt_dir, run_id, keep, final)
    _barrier()
    return final


def _parse(name: str):
    m = _STEP_RE.match(name)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def _state_of(path: str) -> dict | None:
    try:
        state = read_json(os.path.join(path, TRAINER_STATE), "checkpoint")
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def list_checkpoints(ckpt_dir: str, run_id: str | None = None) -> list[str]:
    """Complete checkpoints (of run `run_id` when given), oldest first; unfinished `.tmp-*` and
    `.del-*` folders are never listed."""
    if not os.path.isdir(ckpt_dir):
        return []
    found = []
    for name in os.listdir(ckpt_dir):
        key, path = _parse(name), os.path.join(ckpt_dir, name)
        if key is None or not os.path.isfile(os.path.join(path, TRAINER_STATE)):
            continue
        if run_id is not None and (_state_of(path) or {}).get("run_id") != run_id:
            continue
        found.append((key, path))
    return [p for _, p in sorted(found)]


def latest_checkpoint(ckpt_dir: str, run_id: str | None = None) -> str | None:
    """The checkpoint `<dir>/latest` names (when complete and of run `run_id`), else the newest
    complete one (a kill between the first save's rename and its pointer leaves no pointer)."""
    try:
        with open(os.path.join(ckpt_dir, LATEST), encoding="utf-8") as f:
            name = f.read().strip()
    except (OSError, UnicodeDecodeError):
        name = ""
    if _parse(name) is not None:
        path = os.path.join(ckpt_dir, name)
        state = _state_of(path)
        if state is not None and (run_id is None or state.get("run_id") == run_id):
            return path
    found = list_checkpoints(ckpt_dir, run_id)
    return found[-1] if found else None


def rotate(ckpt_dir: str, run_id: str, keep: int, current: str) -> None:
    """Deletes this run's checkpoints beyond the `keep` newest (`current` always stays) and
    this run's unfinished leftovers. Other runs' folders are never touched."""
    tag = run_id[:12]
    for name in os.listdir(ckpt_dir):
        if name.startswith(f".tmp-{tag}-") or name.startswith(f".del-{tag}-"):
            if os.path.join(ckpt_dir, name) != current:
                shutil.rmtree(os.path.join(ckpt_dir, name), ignore_errors=False)
    if keep <= 0:
        return
    cur_key = _parse(os.path.basename(current))
    others = [p for p in list_checkpoints(ckpt_dir, run_id) if p != current]
    # a checkpoint past `current` belongs to an abandoned continuation (resume from an older step)
    older = [p for p in others if _parse(os.path.basename(p)) < cur_key]
    kept = set(older[max(0, len(older) - (keep - 1)):] if keep > 1 else [])
    for path in others:
        if path not in kept:
            remove_tree(path, f".del-{tag}-{os.path.basename(path)}-{uuid.uuid4().hex[:6]}")
    fsync_dir(ckpt_dir)


def read_trainer_state(path: str) -> dict:
    """trainer_state.json of a checkpoint; ValueError when `path` is not a complete checkpoint
    written by this version (older ones stored pickles, which are never read)."""
    for name in (TRAINER_STATE, ".metadata", "scheduler.json"):
        if not os.path.isfile(os.path.join(path, name)):
            hint = (" (it has scheduler.pt: an older checkpoint format whose pickled files are not "
                    "loaded)" if os.path.isfile(os.path.join(path, "scheduler.pt")) else "")
            raise checks.argument_error(f"checkpoint: {path!r}", "a step-N folder written by s1kernels.train",
                                        f"a folder with no {name}{hint}")
    state = read_json(os.path.join(path, TRAINER_STATE), "checkpoint")
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or not isinstance(state.get("run_id"), str):
        raise ValueError(f"checkpoint: {os.path.join(path, TRAINER_STATE)!r} lacks step/run_id")
    return state


def load_checkpoint(path: str, model, optimizer, scheduler) -> dict:
    """Restores model, optimizer, scheduler and this rank's RNG from `path`; returns the trainer state.

    A checkpoint from another world size loads too (DCP reshards); the RNG state of a rank the
    writing run did not have is left as it is.
    """
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    trainer_state = read_trainer_state(path)
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp_load(state, path)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    safe_state.load_scheduler(os.path.join(path, "scheduler.json"), scheduler)
    rng = os.path.join(path, f"rng-{_rank()}.safetensors")
    if os.path.isfile(rng):
        safe_state.load_rng(rng)
    return trainer_state


def export_checkpoint(path: str, output: str, dtype: torch.dtype | None = None,
                      max_shard_bytes: int | None = EXPORT_SHARD_BYTES) -> None:
    """HF-format model folder from training checkpoint `path` (one process, any world size wrote it).

    Reads one parameter at a time from the DCP files, so memory stays at about one output file;
    the folder is published atomically (see `s1kernels.train.publish`).
    """
    from s1kernels.data import S1Tokenizer

    read_trainer_state(path)
    # every check that reads only metadata comes before the output folder is made
    safe_state.check_storage_paths(safe_state.read_dcp_metadata(os.path.join(path, ".metadata")), path)
    config = ModelConfig.from_json(path)
    tok = S1Tokenizer.from_folder(path)
    with torch.device("meta"):
        params = list(Transformer(config).named_parameters())
    sizes = {hf_name(n): p.numel() * out_dtype(p, dtype).itemsize for n, p in params}

    def tensors():
        for name, p in params:
            t = torch.empty(p.shape, dtype=out_dtype(p, dtype))
            dcp_load({"model": {name: t}}, path, no_dist=True)  # casts while reading
            yield t

    tmp = stage(output)
    write_folder(tmp, config, tok, dtype, sizes, tensors(), max_shard_bytes)
    commit(output)
