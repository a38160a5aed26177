"""Hugging Face-format checkpoints: config.json + model.safetensors (or sharded with an index).

Tensors are read one at a time through `safe_open` straight into the parameters of a model
built on the meta device, so loading never holds a second full copy of the weights.
"""
from __future__ import annotations

import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import ModelConfig
from .transformer import Transformer

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def hf_name(name: str) -> str:
    """Our parameter name -> the Hugging Face name (everything but lm_head sits under 'model.')."""
    return name if name.startswith("lm_head.") else "model." + name


def our_name(name: str) -> str:
    return name[len("model."):] if name.startswith("model.") else name


def _weight_files(folder: str) -> dict[str, str]:
    """HF tensor name -> file path, from the index or the single file."""
    index = os.path.join(folder, INDEX_FILE)
    single = os.path.join(folder, SINGLE_FILE)
    if os.path.isfile(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"folder: {index!r} is not a valid safetensors index ({type(e).__name__}: {e})") from None
        files = {}
        for name, fname in weight_map.items():
            path = os.path.join(folder, fname)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"folder: shard {fname!r} named in {INDEX_FILE} is missing from {folder!r}")
            files[name] = path
        return files
    if os.path.isfile(single):
        try:
            with safe_open(single, framework="pt") as f:
                return {name: single for name in f.keys()}
        except Exception as e:
            raise ValueError(f"folder: {single!r} is not a readable safetensors file ({e})") from None
    present = sorted(os.listdir(folder))
    raise FileNotFoundError(f"folder: {folder!r} has neither {SINGLE_FILE} nor {INDEX_FILE} (found {present[:10]})")


def load_model(folder: str, dtype: torch.dtype = torch.float32, device="cpu", strict: bool = True) -> Transformer:
    """Builds the model described by `folder`/config.json and loads its safetensors weights.

    Raises FileNotFoundError for a missing folder/config/weights, ValueError for a malformed
    config, unsupported architecture, missing or mis-shaped tensors.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"folder: model folder {folder!r} does not exist")
    config = ModelConfig.from_json(folder)
    files = _weight_files(folder)
    with torch.device("meta"):
        model = Transformer(config)
    model = model.to(dtype).to_empty(device=device)  # allocates once, in the target dtype
    params = dict(model.named_parameters())
    loaded = set()
    by_file: dict[str, list[str]] = {}
    for name, path in files.items():
        by_file.setdefault(path, []).append(name)
    unexpected = []
    with torch.no_grad():
        for path, names in by_file.items():
            with safe_open(path, framework="pt", device="cpu") as f:
                for hf in names:
                    ours = our_name(hf)
                    if ours == "lm_head.weight" and config.tie_word_embeddings:
                        continue  # tied: the embedding is the output projection
                    if ours not in params:
                        if not hf.endswith("rotary_emb.inv_freq"):
                            unexpected.append(hf)
                        continue
                    t = f.get_tensor(hf)
                    p = params[ours]
                    if tuple(t.shape) != tuple(p.shape):
                        raise ValueError(f"weights: {hf} has shape {tuple(t.shape)} in {path!r}, "
                                         f"config.json implies {tuple(p.shape)}")
                    p.copy_(t)
                    loaded.add(ours)
    missing = sorted(set(params) - loaded)
    if strict and (missing or unexpected):
        raise ValueError(f"weights: {folder!r} does not match its config.json: missing "
                         f"{[hf_name(m) for m in missing][:8]}, unexpected {unexpected[:8]}")
    return model.eval()


def _to_save(model: Transformer) -> dict[str, torch.Tensor]:
    tensors = {}
    for name, p in model.named_parameters():
        tensors[hf_name(name)] = p.detach().to("cpu").contiguous()
    return tensors


def save_model(model: Transformer, folder: str, max_shard_bytes: int | None = None,
               dtype: torch.dtype | None = None) -> None:
    """Writes config.json and safetensors weights with HF names (loads in transformers/vLLM).

    One model.safetensors, or shards model-0000i-of-0000n.safetensors plus the index when
    the weights exceed `max_shard_bytes`. `dtype` casts floating tensors before writing.
    """
    os.makedirs(folder, exist_ok=True)
    tensors = _to_save(model)
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    cfg = model.config.to_hf_dict()
    first = next(iter(tensors.values()))
    cfg["torch_dtype"] = str(first.dtype).replace("torch.", "")
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    meta = {"format": "pt"}
    for stale in [n for n in os.listdir(folder) if n == INDEX_FILE or (n.startswith("model-") and n.endswith(".safetensors"))]:
        os.remove(os.path.join(folder, stale))
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(tensors, os.path.join(folder, SINGLE_FILE), metadata=meta)
        return
    shards, cur, size = [], {}, 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if cur and size + nbytes > max_shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[name] = t
        size += nbytes
    shards.append(cur)
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(folder, fname), metadata=meta)
        weight_map.update({name: fname for name in shard})
    with open(os.path.join(folder, INDEX_FILE), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
