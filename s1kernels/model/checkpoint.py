"""Hugging Face-format checkpoints: config.json + model.safetensors (or sharded with an index).

Tensors are read one at a time through `safe_open` straight into the parameters of a model
built on the meta device, so loading never holds a second full copy of the weights. A model
sharded before it is materialised (FSDP2 `fully_shard` on the meta model, see `load_model`'s
`shard`) reads only its own rows of each tensor. Writing is streamed the same way: at most
one output file's tensors are held at a time.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from s1kernels.checks import path_inside, read_json, symlinks_allowed

from .config import ModelConfig
from .transformer import Transformer
from s1kernels import checks

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# a committed publish not yet rolled forward (s1kernels.train.publish): the folder may mix
# two models until it is, so no loader reads it
PENDING_PUBLISH = ".final-pending"
# safetensors dtype names a weight may be stored as (cast to the model's dtype on load)
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")


def hf_name(name: str) -> str:
    """Our parameter name -> the Hugging Face name (everything but lm_head sits under 'model.')."""
    return name if name.startswith("lm_head.") else "model." + name


def our_name(name: str) -> str:
    return name[len("model."):] if name.startswith("model.") else name


def _weight_files(folder: str, allow_symlinks: bool | None = None) -> dict[str, str]:
    """HF tensor name -> file path, from the index or the single file.

    Every file the index names must be a ``.safetensors`` file inside `folder` (no absolute
    paths, no ``..``, no symbolic links unless `allow_symlinks`, default: S1K_ALLOW_SYMLINKS=1);
    the same holds for the single file."""
    if allow_symlinks is None:
        allow_symlinks = symlinks_allowed()
    index = os.path.join(folder, INDEX_FILE)
    single = os.path.join(folder, SINGLE_FILE)
    if os.path.isfile(index):
        path_inside(folder, INDEX_FILE, "folder", allow_symlinks)
        weight_map = read_json(index, "folder", expect_object=True).get("weight_map")
        if not isinstance(weight_map, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
            raise checks.argument_error(f"folder: {index!r} is not a valid safetensors index",
                                        '"weight_map" to be an object of tensor name -> file name strings',
                                        _shape_of(weight_map))
        files, checked = {}, {}
        for name, fname in weight_map.items():
            path = checked.get(fname)
            if path is None:
                if not fname.endswith(".safetensors"):
                    raise ValueError(f"folder: {INDEX_FILE} places {name!r} in {fname!r}, which is not a "
                                     f".safetensors file")
                path = path_inside(folder, fname, f"folder: {INDEX_FILE} entry for {name!r}", allow_symlinks)
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"folder: shard {fname!r} named in {INDEX_FILE} is missing from {folder!r}")
                checked[fname] = path
            files[name] = path
        return files
    if os.path.isfile(single):
        path_inside(folder, SINGLE_FILE, "folder", allow_symlinks)
        try:
            with safe_open(single, framework="pt") as f:
                return {name: single for name in f.keys()}
        except Exception as e:
            raise ValueError(f"folder: {single!r} is not a readable safetensors file ({e})") from None
    present = sorted(os.listdir(folder))
    raise FileNotFoundError(f"folder: {folder!r} has neither {SINGLE_FILE} nor {INDEX_FILE} (found {present[:10]})")


def _shape_of(value) -> str:
    """A short description of a JSON value (never its whole text: it may be huge or deep)."""
    if isinstance(value, dict):
        bad = next(((k, v) for k, v in value.items() if not isinstance(v, str)), None)
        return f"an object whose {bad[0]!r} is a {type(bad[1]).__name__}" if bad else "an object"
    return "null" if value is None else f"a {type(value).__name__}"


def load_model(folder: str, dtype: torch.dtype = torch.float32, device="cpu", strict: bool = True,
               shard: Callable[[Transformer], object] | None = None) -> Transformer:
    """Builds the model described by `folder`/config.json and loads its safetensors weights.

    `shard(model)` is called on the meta-device model before it is materialised, e.g. FSDP2
    `fully_shard`: each parameter then is a DTensor sharded on dim 0, and only this rank's
    rows are read from the files (host memory: one slice at a time).

    Raises FileNotFoundError for a missing folder/config/weights, ValueError for a malformed
    config, unsupported architecture, missing or mis-shaped tensors. Every check reads only
    file headers and runs before `shard`, so under torchrun every rank raises the same error.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"folder: model folder {folder!r} does not exist")
    if os.path.isdir(os.path.join(folder, PENDING_PUBLISH)):
        raise ValueError(f"folder: {folder!r} holds an interrupted publish ({PENDING_PUBLISH}); run "
                         f"`python -m s1kernels.train --output {folder} --resume` to finish it")
    config = ModelConfig.from_json(folder)
    _check_layer_count(folder, config, strict)
    with torch.device("meta"):
        model = Transformer(config).to(dtype)
    plan = _match_weights(folder, model, strict)
    if shard is not None:
        shard(model)
    model.to_empty(device=device)  # allocates once (only the local shard when sharded), in the target dtype
    model.reset_rope()  # a non-persistent buffer: to_empty leaves it uninitialised
    params = dict(model.named_parameters())
    with torch.no_grad():
        for path, names in plan.items():
            with safe_open(path, framework="pt", device="cpu") as f:
                for hf, ours in names:
                    _read_into(f, hf, params[ours])
    return model.eval()


def _check_layer_count(folder: str, config: ModelConfig, strict: bool) -> None:
    """The decoder layers config.json asks for are the ones the weights hold (read from the
    file headers, before a model of that size is built)."""
    layers = set()
    for name in _weight_files(folder):
        parts = name.split(".")
        if len(parts) > 3 and parts[:2] == ["model", "layers"] and parts[2].isdigit():
            layers.add(int(parts[2]))
    n = config.num_hidden_layers
    if (strict and layers != set(range(n))) or (not strict and layers and max(layers) >= n):
        held = f"layers 0..{max(layers)} ({len(layers)} in all)" if layers else "no decoder layers"
        raise ValueError(f"config: {folder!r}/config.json says num_hidden_layers={n} but its weights hold {held}")


def _match_weights(folder: str, model: Transformer, strict: bool) -> dict[str, list[tuple[str, str]]]:
    """file -> [(HF name, our name)] to read; checks names and shapes from the file headers."""
    files = _weight_files(folder)
    params = dict(model.named_parameters())
    plan: dict[str, list[tuple[str, str]]] = {}
    by_file: dict[str, list[str]] = {}
    for name, path in files.items():
        by_file.setdefault(path, []).append(name)
    unexpected, loaded = [], set()
    for path, names in by_file.items():
        with safe_open(path, framework="pt", device="cpu") as f:
            present = set(f.keys())
            absent = [hf for hf in names if hf not in present]
            if absent:
                raise ValueError(f"weights: {INDEX_FILE} places {absent[:8]} in {path!r}, which does not hold them")
            for hf in names:
                ours = our_name(hf)
                if ours == "lm_head.weight" and model.config.tie_word_embeddings:
                    continue  # tied: the embedding is the output projection
                if ours not in params:
                    if not hf.endswith("rotary_emb.inv_freq"):
                        unexpected.append(hf)
                    continue
                sl = f.get_slice(hf)
                dtype = sl.get_dtype()
                if dtype not in FLOAT_DTYPES:  # an int or bool tensor cast to float is not a weight
                    raise ValueError(f"weights: {hf} is stored as {dtype} in {path!r}; model weights are "
                                     f"floating point ({', '.join(FLOAT_DTYPES)})")
                shape = tuple(sl.get_shape())
                if shape != tuple(params[ours].shape):
                    raise ValueError(f"weights: {hf} has shape {shape} in {path!r}, "
                                     f"config.json implies {tuple(params[ours].shape)}")
                plan.setdefault(path, []).append((hf, ours))
                loaded.add(ours)
    missing = sorted(set(params) - loaded)
    if strict and (missing or unexpected):
        raise ValueError(f"weights: {folder!r} does not match its config.json: missing "
                         f"{[hf_name(m) for m in missing][:8]}, unexpected {unexpected[:8]}")
    return plan


def shard_rows(rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, end) of dim 0 held by `rank` under DTensor Shard(0): torch.chunk's split, where
    every chunk has ceil(rows / world_size) rows, the last ones fewer or none."""
    size = -(-rows // world_size)
    start = min(rank * size, rows)
    return start, min(start + size, rows)


def _read_into(f, hf: str, p: torch.Tensor) -> None:
    """Copies tensor `hf` of the open file into `p`; a dim-0 sharded DTensor reads only its rows."""
    from torch.distributed.tensor import DTensor, Shard

    if not isinstance(p, DTensor):
        p.copy_(f.get_tensor(hf))
        return
    if p.device_mesh.ndim != 1 or tuple(p.placements) != (Shard(0),):
        raise ValueError(f"shard: {hf} is placed as {p.placements} on a {p.device_mesh.ndim}-D mesh; "
                         f"loading supports Shard(0) on a 1-D mesh (FSDP2 fully_shard)")
    local = p.to_local()
    start, end = shard_rows(p.shape[0], p.device_mesh.get_local_rank(), p.device_mesh.size())
    if local.shape[0] != end - start or local.shape[1:] != p.shape[1:]:
        raise RuntimeError(f"shard: {hf} local shape {tuple(local.shape)} is not rows [{start}, {end}) "
                           f"of {tuple(p.shape)}")
    if end > start:
        local.copy_(f.get_slice(hf)[start:end])


def _plan_files(sizes: dict[str, int], max_shard_bytes: int | None) -> list[list[str]]:
    """Tensor names grouped into output files, in order, each group under `max_shard_bytes`."""
    if max_shard_bytes is None or sum(sizes.values()) <= max_shard_bytes:
        return [list(sizes)]
    groups, cur, size = [], [], 0
    for name, nbytes in sizes.items():
        if cur and size + nbytes > max_shard_bytes:
            groups.append(cur)
            cur, size = [], 0
        cur.append(name)
        size += nbytes
    groups.append(cur)
    return groups


def write_weights(folder: str, sizes: dict[str, int], tensors: Iterable[torch.Tensor],
                  max_shard_bytes: int | None = None) -> None:
    """Writes safetensors weights with HF names into `folder`.

    `sizes` maps each HF name to its size in bytes, in writing order; `tensors` yields the
    tensors in that order and is consumed one output file at a time, so at most one file's
    tensors are held. One model.safetensors, or model-0000i-of-0000n.safetensors plus the
    index when the total exceeds `max_shard_bytes`.
    """
    os.makedirs(folder, exist_ok=True)
    for stale in [n for n in os.listdir(folder) if n in (INDEX_FILE, SINGLE_FILE)
                  or (n.startswith("model-") and n.endswith(".safetensors"))]:
        os.remove(os.path.join(folder, stale))
    groups = _plan_files(sizes, max_shard_bytes)
    meta = {"format": "pt"}
    it = iter(tensors)
    weight_map = {}
    for i, names in enumerate(groups):
        fname = SINGLE_FILE if len(groups) == 1 else f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        chunk = {}
        for name in names:
            t = next(it)
            if t.numel() * t.element_size() != sizes[name]:
                raise ValueError(f"tensors: {name} has {t.numel() * t.element_size()} bytes, sizes says {sizes[name]}")
            chunk[name] = t.contiguous()
        save_file(chunk, os.path.join(folder, fname), metadata=meta)
        weight_map.update({name: fname for name in names})
    if len(groups) > 1:
        with open(os.path.join(folder, INDEX_FILE), "w") as f:
            json.dump({"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}, f, indent=2)


def save_model(model: Transformer, folder: str, max_shard_bytes: int | None = None,
               dtype: torch.dtype | None = None) -> None:
    """Writes config.json and safetensors weights with HF names (loads in transformers/vLLM).

    One model.safetensors, or shards model-0000i-of-0000n.safetensors plus the index when
    the weights exceed `max_shard_bytes`. `dtype` casts floating tensors before writing.
    """
    def out_dtype(p):
        return dtype if dtype is not None and p.is_floating_point() else p.dtype

    params = [(hf_name(n), p) for n, p in model.named_parameters()]
    cfg = model.config.to_hf_dict()
    cfg["torch_dtype"] = str(out_dtype(params[0][1])).replace("torch.", "")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    sizes = {name: p.numel() * out_dtype(p).itemsize for name, p in params}
    write_weights(folder, sizes, (p.detach().to("cpu", out_dtype(p)) for _, p in params), max_shard_bytes)
