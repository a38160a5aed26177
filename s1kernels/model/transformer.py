"""A compact Qwen2/Qwen2.5 and Llama-3 decoder (one readable module, gpt-fast style).

Training runs on packed rows: `model(input_ids [T], position_ids [T], cu_seqlens [S+1])`
returns the final-normed hidden states [T, H]; the fused loss applies `lm_head_weight`
itself, so [T, V] logits never exist. Generation uses a static KV cache:
`model.forward_cached(input_ids [B, T], start_pos [B], cache)`.

Parameter names follow Hugging Face minus the leading "model." (see checkpoint.py).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from . import cpu_attention, layer_ops
from .attention import cached_attention, varlen_causal_attention
from .config import ModelConfig
from s1kernels import checks


def _fused_training(x: torch.Tensor, *params: torch.Tensor) -> bool:
    """Whether a layer takes layer_ops' autograd functions: a CPU training forward, where its
    fewer temporaries save page faults (see layer_ops)."""
    return x.device.type == "cpu" and torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad
                                                                                           for p in params))


def rope_inv_freq(config: ModelConfig) -> torch.Tensor:
    """RoPE inverse frequencies [head_dim/2] fp32, with linear or Llama-3 scaling if configured."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    kind, s = config.rope_type, config.rope_scaling or {}
    if kind == "linear":
        inv_freq = inv_freq / s["factor"]
    elif kind == "llama3":
        factor, low, high = s["factor"], s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0)
        old_len = s["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        inv_freq = torch.where(medium, smoothed, scaled)
    return inv_freq


def rope_cos_sin(position_ids: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype):
    """cos, sin of shape [..., head_dim] for integer positions (computed in fp32)."""
    freqs = position_ids.to(torch.float32)[..., None] * inv_freq.to(position_ids.device)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE (the HF convention); cos/sin broadcast over the heads dimension."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fused_training(x, self.weight):
            return layer_ops.rms_norm(x, self.weight, self.eps)
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        h, d = config.hidden_size, config.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, d
        bias = config.attention_bias
        self.q_proj = nn.Linear(h, self.n_heads * d, bias=bias)
        self.k_proj = nn.Linear(h, self.n_kv_heads * d, bias=bias)
        self.v_proj = nn.Linear(h, self.n_kv_heads * d, bias=bias)
        # Qwen2 has biases on q/k/v only; Llama's attention_bias covers o_proj as well
        self.o_proj = nn.Linear(self.n_heads * d, h, bias=bias and config.model_type == "llama")

    def _qkv(self, x, cos, sin, pack=None):
        shape = x.shape[:-1]
        if pack is None:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        else:
            q, k, v = pack.qkv(x).split(pack.qkv_sizes, dim=-1)
        q = q.reshape(*shape, self.n_heads, self.head_dim)
        k = k.reshape(*shape, self.n_kv_heads, self.head_dim)
        v = v.reshape(*shape, self.n_kv_heads, self.head_dim)
        cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
        if _fused_training(x, self.q_proj.weight):
            return layer_ops.rope(q, cos, sin), layer_ops.rope(k, cos, sin), v
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def forward(self, x, cos, sin, cu_seqlens, max_seqlen=None):
        """Packed: x [T, H] -> [T, H]."""
        q, k, v = self._qkv(x, cos, sin)
        out = varlen_causal_attention(q, k, v, cu_seqlens, max_seqlen)
        return self.o_proj(out.reshape(x.shape[0], -1))

    def forward_cached(self, x, cos, sin, start_pos, k_cache, v_cache, pack=None, kv_len=None):
        """x [B, T, H]; writes this step's K/V into the cache slices, then attends over the
        first `kv_len` cache positions (all when None)."""
        B, T, _ = x.shape
        if pack is not None and cpu_attention.usable(x, k_cache, v_cache):
            # one new token per row on the CPU: RoPE, cache writes and attention in one call
            out = cpu_attention.decode_attention(pack.qkv(x[:, 0]), cos, sin, start_pos, k_cache, v_cache,
                                                 self.n_heads, self.n_kv_heads)
            return pack.o(out)[:, None]
        q, k, v = self._qkv(x, cos, sin, pack)  # [B, T, heads, D]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        idx = (start_pos[:, None] + torch.arange(T, device=x.device))[:, None, :, None]
        idx = idx.expand(B, self.n_kv_heads, T, self.head_dim)
        k_cache.scatter_(2, idx, k.to(k_cache.dtype))
        v_cache.scatter_(2, idx, v.to(v_cache.dtype))
        if kv_len is not None:
            k_cache, v_cache = k_cache[:, :, :kv_len], v_cache[:, :, :kv_len]
        out = cached_attention(q, k_cache.to(q.dtype), v_cache.to(q.dtype), start_pos)
        out = out.transpose(1, 2).reshape(B, T, -1)
        return self.o_proj(out) if pack is None else pack.o(out)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        h, i, b = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(h, i, bias=b)
        self.up_proj = nn.Linear(h, i, bias=b)
        self.down_proj = nn.Linear(i, h, bias=b)

    def forward(self, x, pack=None):
        if pack is None:
            if _fused_training(x, self.gate_proj.weight):
                return self.down_proj(layer_ops.swiglu(self.gate_proj(x), self.up_proj(x)))
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        gate, up = pack.gate_up(x).chunk(2, dim=-1)
        return pack.down(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x, cos, sin, cu_seqlens, max_seqlen=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cu_seqlens, max_seqlen)
        return x + self.mlp(self.post_attention_layernorm(x))

    def forward_cached(self, x, cos, sin, start_pos, k_cache, v_cache, pack=None, kv_len=None):
        x = x + self.self_attn.forward_cached(self.input_layernorm(x), cos, sin, start_pos, k_cache, v_cache,
                                              pack, kv_len)
        return x + self.mlp(self.post_attention_layernorm(x), pack)


class KVCache:
    """Static K/V storage for generation: k, v of shape [layers, batch, kv_heads, max_len, head_dim]."""

    def __init__(self, config: ModelConfig, batch: int, max_len: int, dtype: torch.dtype, device):
        shape = (config.num_hidden_layers, batch, config.num_key_value_heads, max_len, config.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.batch, self.max_len = batch, max_len

    def reset(self) -> None:
        self.k.zero_()
        self.v.zero_()

    def rows(self, start: int, stop: int) -> "KVCache":
        """A cache over rows start..stop-1 of this one (views: writes land here)."""
        view = KVCache.__new__(KVCache)
        view.k, view.v = self.k[:, start:stop], self.v[:, start:stop]
        view.batch, view.max_len = stop - start, self.max_len
        return view


class Transformer(nn.Module):
    """Qwen2/Llama decoder. See the module docstring for the packed and cached entry points."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(config), persistent=False)
        self.gradient_checkpointing = False

    # -- parameters ---------------------------------------------------------------------------
    @property
    def lm_head_weight(self) -> torch.Tensor:
        """[V, H] output projection (the embedding matrix when tied)."""
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def init_weights(self, seed: int | None = None) -> "Transformer":
        """Fresh initialisation (normal(0, initializer_range) matrices, zero biases, unit norms)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = self.config.initializer_range
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("norm.weight"):
                    p.fill_(1.0)
                elif name.endswith(".bias"):
                    p.zero_()
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
        self.inv_freq = rope_inv_freq(self.config).to(self.inv_freq.device)
        return self

    def reset_rope(self) -> None:
        """Recomputes the RoPE buffer in fp32 on the buffer's device."""
        device = self.inv_freq.device
        self.inv_freq = rope_inv_freq(self.config).to("cpu" if device.type == "meta" else device)

    def _apply(self, fn, *args, **kwargs):
        # .to(dtype) / .half() / to_empty() must not round the RoPE frequencies: keep them fp32
        super()._apply(fn, *args, **kwargs)
        if self.inv_freq.device.type != "meta":
            self.inv_freq = rope_inv_freq(self.config).to(self.inv_freq.device)
        return self

    # -- training / scoring -------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, cu_seqlens: torch.Tensor,
                max_seqlen: int | None = None, loss_fn=None):
        """Packed forward: input_ids, position_ids [T]; cu_seqlens [S+1] int32 -> hidden [T, H].

        With `loss_fn`, returns `loss_fn(hidden, self.lm_head_weight)` instead, so the output
        projection is used inside this module's forward (what FSDP's hooks expect).
        """
        if input_ids.dim() != 1 or position_ids.shape != input_ids.shape:
            raise checks.argument_error("input_ids/position_ids", "matching 1-D [T] tensors",
                                        f"{tuple(input_ids.shape)} and {tuple(position_ids.shape)}")
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
            raise checks.argument_error("cu_seqlens", "a 1-D tensor [S+1] with S >= 1",
                                        f"shape {tuple(cu_seqlens.shape)}")
        x = self.embed_tokens(input_ids)
        dev = x.device.type
        # under autocast q/k come out of the projections in the autocast dtype: rotate them in it
        rope_dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        cos, sin = rope_cos_sin(position_ids, self.inv_freq, rope_dtype)
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, cos, sin, cu_seqlens, max_seqlen, use_reentrant=False)
            else:
                x = layer(x, cos, sin, cu_seqlens, max_seqlen)
        hidden = self.norm(x)
        if loss_fn is not None:
            return loss_fn(hidden, self.lm_head_weight)
        return hidden

    def logits(self, hidden: torch.Tensor, pack=None) -> torch.Tensor:
        """[..., H] hidden -> [..., V] fp32 logits (for decoding and small-scale scoring);
        `pack`: a DecodePack of this model (CPU decoding)."""
        if pack is not None:
            return pack.lm_head(hidden).float()
        return F.linear(hidden, self.lm_head_weight.to(hidden.dtype)).float()

    # -- generation ---------------------------------------------------------------------------
    def new_kv_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None, device=None) -> KVCache:
        """Zeroed static cache for `batch` rows of up to `max_len` positions."""
        w = self.embed_tokens.weight
        return KVCache(self.config, batch, max_len, dtype or w.dtype, device or w.device)

    def forward_cached(self, input_ids: torch.Tensor, start_pos: torch.Tensor, cache: KVCache, pack=None,
                       kv_len: int | None = None) -> torch.Tensor:
        """input_ids [B, T], start_pos [B] int64 (device) -> hidden [B, T, H].

        Writes K/V of row b at positions start_pos[b] .. start_pos[b]+T-1 and lets query t of
        row b attend to cache positions <= start_pos[b]+t. Positions must stay below the
        cache's max_len (not checked: checking would need a host sync). `kv_len`, when the
        caller knows it on the host, bounds the attention to the first kv_len positions (it
        must exceed every start_pos[b]+T-1); `pack` is a DecodePack of this model (CPU).
        """
        if input_ids.dim() != 2:
            raise checks.argument_error("input_ids", "[B, T]", f"shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if start_pos.shape != (B,):
            raise checks.argument_error("start_pos", f"shape ({B},)", tuple(start_pos.shape))
        if B > cache.batch:
            raise ValueError(f"cache: holds {cache.batch} rows, input has {B}")
        x = self.embed_tokens(input_ids)
        positions = start_pos[:, None] + torch.arange(T, device=input_ids.device)
        cos, sin = rope_cos_sin(positions, self.inv_freq, x.dtype)
        for i, layer in enumerate(self.layers):
            lp = None if pack is None else pack.layers[i]
            x = layer.forward_cached(x, cos, sin, start_pos, cache.k[i, :B], cache.v[i, :B], lp, kv_len)
        return self.norm(x)
