"""A training run's identity and its claim on the --output folder.

A run is identified by the settings that change its result (`settings`): the model and data
(by content fingerprint, so a moved folder is the same run), the optimizer and schedule, the
global batch, precision, seed. Its id is a hash of them, stored in `<output>/run.json` and in
every checkpoint's trainer_state.json.

- A new run refuses an --output folder that holds a run (or its files) unless `--overwrite`;
  with it, what an earlier run wrote there is removed first (other files are left alone).
- `--resume` refuses settings that differ from the checkpoint's and names each one; settings
  that cannot change the result (`MAY_CHANGE`) may differ.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid

from s1kernels.model.checkpoint import PENDING_PUBLISH
from s1kernels import checks
from s1kernels.checks import read_json
from s1kernels.train.files import remove_tree, replace_json_atomic
from s1kernels.train.publish import TMP_FINAL, finish_publish, is_model_file

RUN_FILE = "run.json"
# TrainConfig fields that may differ on --resume: where things are written and how often,
# how it is computed (backends agree, recomputation gives the same values), how the global
# batch is split (only rows_per_step enters the settings)
MAY_CHANGE = ("output", "resume", "overwrite", "save_every", "keep_checkpoints", "log_every", "eval_rows",
              "progress", "loss_backend", "threads", "gradient_checkpointing", "micro_batch", "grad_accum")
_FLAG = {"total_steps": "--max-steps/--epochs", "warmup_steps": "--warmup-ratio (warm-up steps)",
         "rows_per_step": "--micro-batch x --grad-accum x world size (rows per step)"}
_TINY = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size")


def fingerprint(path: str | None) -> str | None:
    """Content fingerprint of a file or folder: names, sizes, and the first and last MiB of each
    file (at most 2 MiB read per file, whatever its size)."""
    if path is None:
        return None
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path!r} does not exist")
    files = [path]
    if os.path.isdir(path):
        files = []
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # staging/trash folders
            files += [os.path.join(root, n) for n in sorted(names) if not n.startswith(".")]
    h = hashlib.sha256()
    for f in files:
        size = os.path.getsize(f)
        h.update(f"{os.path.relpath(f, path)}\0{size}\0".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(size - (1 << 20))
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:24]


def settings(cfg, total_steps: int, warmup_steps: int, rows_per_step: int, bf16: bool, vocab_size: int) -> dict:
    """The settings that change a run's result (JSON-able, compared key by key on resume)."""
    s = {"model": fingerprint(cfg.model), "data": fingerprint(cfg.data), "lr": cfg.lr,
         "min_lr_ratio": cfg.min_lr_ratio, "betas": list(cfg.betas), "weight_decay": cfg.weight_decay,
         "total_steps": total_steps, "warmup_steps": warmup_steps, "rows_per_step": rows_per_step,
         "block_size": cfg.block_size, "normalize": cfg.normalize, "max_grad_norm": cfg.max_grad_norm,
         "bf16": bool(bf16), "vocab_size": vocab_size, "overlong": cfg.overlong, "seed": cfg.seed,
         "max_samples": cfg.max_samples}
    if cfg.data is None:
        s["synthetic_rows"] = cfg.synthetic_rows
    if cfg.model is None:
        s.update({k: getattr(cfg, k) for k in _TINY})
    return s


def run_id(s: dict) -> str:
    return hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:16]


def differences(old: dict, new: dict) -> list[str]:
    """'--flag: old -> new' for every setting that differs."""
    out = []
    for k in sorted(set(old) | set(new)):
        if old.get(k) != new.get(k):
            flag = _FLAG.get(k, "--" + k.replace("_", "-"))
            what = ("another file content" if k in ("model", "data") and old.get(k) and new.get(k)
                    else f"{old.get(k)!r} -> {new.get(k)!r}")
            out.append(f"{flag}: {what}")
    return out


def check_resume(ckpt_state: dict, s: dict, path: str) -> None:
    """ValueError naming each result-changing setting that differs from checkpoint `path`'s."""
    diff = differences(ckpt_state.get("settings", {}), s)
    if diff:
        raise ValueError(f"--resume: {path} was written with other settings that change the result: "
                         f"{'; '.join(diff)}. Resume with the original values, or start a new run "
                         f"(another --output, or --overwrite). May differ: "
                         f"{', '.join('--' + f.replace('_', '-') for f in MAY_CHANGE)}")


def owner(output: str) -> dict | None:
    """run.json of `output` (None when absent); ValueError when it is not one."""
    path = os.path.join(output, RUN_FILE)
    if not os.path.isfile(path):
        return None
    d = read_json(path, "--output")
    if not isinstance(d, dict) or not isinstance(d.get("run_id"), str) or not isinstance(d.get("settings"), dict):
        raise ValueError(f"--output: {path!r} is not a run file written by s1kernels.train")
    return d


def _ours(name: str) -> bool:
    return (name in (RUN_FILE, "checkpoints", "train_log.jsonl", "train_config.json", TMP_FINAL, PENDING_PUBLISH)
            or is_model_file(name))


def check_output(output: str, resume, overwrite: bool) -> None:
    """Cheap checks before any long work: the folder is writable, and a new run does not take a
    folder holding another one unless asked to overwrite."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"--output: {output!r} exists and is not a folder")
    parent = output
    while not os.path.exists(parent):
        parent = os.path.dirname(os.path.abspath(parent))
    checks.probe_dir(parent, "--output")
    if resume or overwrite or not os.path.isdir(output):
        return
    found = sorted(n for n in os.listdir(output) if _ours(n))
    if found:
        held = owner(output)
        if held is not None and not _saved_any(output, held["run_id"]):
            # A run stopped before its first checkpoint: the same command starts it over,
            # which needs this run's id (known once data and model are read; see `restart`).
            return
        refuse_taken(output, found)


def refuse_taken(output: str, found: list[str] | None = None) -> None:
    found = found if found is not None else sorted(n for n in os.listdir(output) if _ours(n))
    raise ValueError(f"--output: {output!r} already holds a training run ({', '.join(found[:5])}); "
                     f"pass --resume to continue it, --overwrite to replace it, or choose another folder")


def _saved_any(output: str, rid: str) -> bool:
    from s1kernels.train.checkpoint import latest_checkpoint

    return latest_checkpoint(os.path.join(output, "checkpoints"), rid) is not None


def restart(output: str, rid: str, overwrite: bool, main: bool) -> bool:
    """True when `output` holds run `rid` stopped before its first checkpoint, so the same
    command (or --resume) starts it over, saying so; ValueError when the folder holds another
    run and `overwrite` is not set; False when there is nothing to restart."""
    held = owner(output) if os.path.isdir(output) else None
    if held is None or overwrite:
        return False
    if held["run_id"] == rid and not _saved_any(output, rid):
        if main:
            print(f"note: {output!r} holds this run, stopped before its first checkpoint; nothing was saved, "
                  f"so it starts over from step 0", file=sys.stderr)
        return True
    return False


def claim(output: str, rid: str, s: dict, overwrite: bool) -> None:
    """Rank 0, after every check passed: clears what an earlier run wrote (when overwriting),
    finishes this run's interrupted publish, and records this run in run.json."""
    os.makedirs(output, exist_ok=True)
    held = owner(output)
    if overwrite and (held is None or held["run_id"] != rid):
        if os.path.lexists(os.path.join(output, "config.json")):
            os.remove(os.path.join(output, "config.json"))  # first: the folder stops being a model
        for name in sorted(os.listdir(output)):
            path = os.path.join(output, name)
            if not _ours(name) or name == RUN_FILE:
                continue
            if os.path.isdir(path):
                remove_tree(path, f".del-{name}-{uuid.uuid4().hex[:6]}")
            else:
                os.remove(path)
        for name in os.listdir(output):  # leftovers of a delete cut short
            if name.startswith(".del-"):
                shutil.rmtree(os.path.join(output, name))
    else:
        finish_publish(output)
    replace_json_atomic(os.path.join(output, RUN_FILE), {"run_id": rid, "settings": s})
