"""The final model: an HF-format folder written so that a kill never leaves a mixed folder.

`publish_final(output, ...)` exports into `<output>/.tmp-final` and fsyncs it; the commit
point is one rename of that folder to `<output>/.final-pending` (with a manifest of its
files). `finish_publish(output)` then rolls the pending folder forward: it removes
`config.json` (from here on the folder is not a model to any loader), replaces the other model
files and removes stale ones, and moves `config.json` in last. It is idempotent, and every
start of `s1kernels.train` on the folder (and `load_model`'s refusal below) sees to it that
an interrupted roll-forward is finished before anything reads the folder:

    kill before the commit rename   -> the previous model (or none), intact; .tmp-final is junk
    kill after it                   -> `.final-pending` exists: `load_model` refuses the folder
                                       with a named error, the next train start finishes it
    roll-forward done               -> the new model

The model is gathered one parameter at a time (`export_model`), so no rank holds it whole.
"""
from __future__ import annotations

import json
import os
import shutil

import torch
import torch.distributed as dist

from s1kernels.model import ModelConfig
from s1kernels.model.checkpoint import PENDING_PUBLISH, hf_name, write_weights
from s1kernels.checks import read_json
from s1kernels.train.files import fsync_dir, fsync_tree, write_json_synced

# the size cap of one output safetensors file (what transformers' save_pretrained uses)
EXPORT_SHARD_BYTES = 5 * 10**9
TMP_FINAL = ".tmp-final"
MANIFEST = ".manifest.json"
_MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "chat_template.jinja", "special_tokens_map.json", "vocab.json", "merges.txt")


def is_model_file(name: str) -> bool:
    """Files a publish owns in the output folder (other files there are left alone)."""
    return name in _MODEL_FILES or name.endswith(".safetensors") or name.endswith(".safetensors.index.json")


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def out_dtype(t: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    return dtype if dtype is not None and t.is_floating_point() else t.dtype


def write_folder(folder: str, config: ModelConfig, tok, dtype, sizes: dict, tensors, max_shard_bytes) -> None:
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
    sizes = {name: p.numel() * out_dtype(p, dtype).itemsize for name, p in params}

    def gathered():
        for _, p in params:
            t = p.detach().to(out_dtype(p, dtype))
            if isinstance(t, DTensor):
                t = t.full_tensor()  # a collective: every rank takes part
            yield t.to("cpu") if rank0 else None

    if rank0:
        write_folder(folder, model.config, tok, dtype, sizes, gathered(), max_shard_bytes)
    else:
        for _ in gathered():
            pass


def stage(output: str) -> str:
    """A fresh, empty staging folder `<output>/.tmp-final` (an old one is never committed: junk)."""
    tmp = os.path.join(output, TMP_FINAL)
    os.makedirs(output, exist_ok=True)
    if os.path.lexists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    return tmp


def commit(output: str) -> None:
    """Commits the staged folder: manifest, fsync, one rename, then the roll-forward."""
    tmp = os.path.join(output, TMP_FINAL)
    names = sorted(n for n in os.listdir(tmp) if n != MANIFEST)
    write_json_synced(os.path.join(tmp, MANIFEST), {"files": names})
    fsync_tree(tmp)
    pending = os.path.join(output, PENDING_PUBLISH)
    if os.path.lexists(pending):  # a finished roll-forward's leftovers or an older commit
        finish_publish(output)
    os.rename(tmp, pending)  # the commit point
    fsync_dir(output)
    finish_publish(output)


def finish_publish(output: str) -> bool:
    """Rolls a committed publish forward (idempotent); True when there was one."""
    pending = os.path.join(output, PENDING_PUBLISH)
    if not os.path.isdir(pending):
        return False
    here = set(os.listdir(pending))
    if "config.json" in here:  # config.json moves last: while it is here the roll-forward is not done
        names = read_json(os.path.join(pending, MANIFEST), "publish")["files"]
        if os.path.lexists(os.path.join(output, "config.json")):
            os.remove(os.path.join(output, "config.json"))
            fsync_dir(output)
        for name in sorted(os.listdir(output)):
            if is_model_file(name) and name not in names and os.path.isfile(os.path.join(output, name)):
                os.remove(os.path.join(output, name))  # stale: the earlier model had it, this one not
        for name in names:
            if name != "config.json" and name in here:
                os.replace(os.path.join(pending, name), os.path.join(output, name))
        fsync_dir(output)
        os.replace(os.path.join(pending, "config.json"), os.path.join(output, "config.json"))
        fsync_dir(output)
    shutil.rmtree(pending)
    fsync_dir(output)
    return True


def publish_final(output: str, model, tok, dtype: torch.dtype | None = None,
                  max_shard_bytes: int | None = EXPORT_SHARD_BYTES) -> None:
    """Exports the model into `output` atomically (see the module doc; every rank must call)."""
    if _rank() == 0:
        tmp = stage(output)
    else:
        tmp = os.path.join(output, TMP_FINAL)
    _barrier()
    export_model(model, tmp, tok, dtype, max_shard_bytes)
    if _rank() == 0:
        commit(output)
    _barrier()
