"""Prepacked projection weights for decoding on a CPU.

A decode step multiplies a handful of rows (the batch) by every weight matrix of the model,
so on a CPU it is bound by how fast the weights stream from memory. torch's plain
``F.linear`` (MKL sgemm on row-major weights) reaches about half of one core's memory
bandwidth at these shapes; oneDNN with the weights reordered once into its blocked layout
(what inductor's "freezing" and IPEX do) reaches about 1.4x more (measured in
docs/real-model.md). Fusing q/k/v into one matrix and gate/up into another also halves the
calls per layer.

``DecodePack`` holds those reordered copies (an extra copy of the projection weights, made in
about 0.1 s per 100M parameters) and is passed to ``Transformer.forward_cached`` and
``Transformer.logits``. The results differ from ``F.linear``'s in the last bits of fp32 (a
different summation order), as a different BLAS would.
"""
from __future__ import annotations

import platform

import torch

__all__ = ["DecodePack", "can_pack", "why_not_pack", "cpu_supports", "AUTO_MAX_BYTES"]

# "auto" packs models whose projection weights are at most this large: the packed copy
# doubles their memory while generating.
AUTO_MAX_BYTES = 2 << 30


def cpu_supports(dtype: torch.dtype) -> bool:
    """True when this CPU and torch's oneDNN can reorder and multiply `dtype` weights.

    fp32 needs oneDNN only. bf16 needs avx_ne_convert or avx512bw+vl+dq (an AVX2-only x86-64
    CPU has neither): torch's own query of that, the same check the reorder op makes before it
    refuses, and it follows ONEDNN_MAX_CPU_ISA, so an AVX-512 machine run with
    ONEDNN_MAX_CPU_ISA=AVX2 answers as an AVX2-only one does."""
    if not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.float32:
        return True
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def why_not_pack(model) -> str | None:
    """None when `DecodePack(model)` can be built here, else the reason (for error messages)."""
    w = getattr(getattr(model, "embed_tokens", None), "weight", None)
    if w is None or not hasattr(model, "layers"):
        return f"expected an s1kernels Transformer, got {type(model).__name__}"
    if w.device.type != "cpu":
        return f"expected a model on the CPU, got one on {w.device}"
    if w.dtype not in (torch.float32, torch.bfloat16):
        return f"expected a float32 or bfloat16 model, got {w.dtype}"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"expected an x86-64 CPU (where the packed path was measured), got {platform.machine()}"
    if not torch.backends.mkldnn.is_available():
        return "expected torch built with oneDNN, got one without it"
    if not cpu_supports(w.dtype):
        return (f"expected a CPU whose oneDNN multiplies {w.dtype} weights (bfloat16 needs avx_ne_convert "
                "or avx512bw+vl+dq), got one without (an AVX2-only CPU; float32 packs there)")
    return None


def can_pack(model) -> bool:
    """True when `model` is an s1kernels Transformer on an x86-64 CPU in fp32/bf16 and this CPU's
    oneDNN supports that dtype, so `DecodePack(model)` can be built (`why_not_pack` says why not)."""
    return why_not_pack(model) is None


class _Packed:
    """One projection: y = x @ W.T (+ b) with W reordered for oneDNN."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, batch_hint: int):
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), batch_hint)
        self.bias = None if bias is None else bias.detach().contiguous()
        self.out_features = weight.shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.weight, self.bias, "none", [], "")


def _cat(*linears):
    ws = [m.weight for m in linears]
    bs = [m.bias for m in linears]
    if all(b is None for b in bs):
        return torch.cat(ws), None
    return torch.cat(ws), torch.cat([torch.zeros(w.shape[0], dtype=w.dtype) if b is None else b for w, b in zip(ws, bs)])


class _LayerPack:
    def __init__(self, layer, batch_hint: int):
        a, m = layer.self_attn, layer.mlp
        self.qkv = _Packed(*_cat(a.q_proj, a.k_proj, a.v_proj), batch_hint)
        self.qkv_sizes = [a.q_proj.out_features, a.k_proj.out_features, a.v_proj.out_features]
        self.o = _Packed(a.o_proj.weight, a.o_proj.bias, batch_hint)
        self.gate_up = _Packed(*_cat(m.gate_proj, m.up_proj), batch_hint)
        self.down = _Packed(m.down_proj.weight, m.down_proj.bias, batch_hint)


class DecodePack:
    """Reordered copies of a CPU model's projections (see the module docstring).

    The copies are taken when built: build a new pack after the weights change."""

    def __init__(self, model, batch_hint: int = 8):
        reason = why_not_pack(model)
        if reason is not None:
            raise ValueError(f"model: cannot prepack: {reason}")
        with torch.no_grad():
            self.layers = [_LayerPack(layer, batch_hint) for layer in model.layers]
            self.lm_head = _Packed(model.lm_head_weight, None, batch_hint)

    @staticmethod
    def weight_bytes(model) -> int:
        """Bytes of the weights a pack copies (the layers' projections and the output head)."""
        n = sum(p.numel() * p.element_size() for layer in model.layers for name, p in layer.named_parameters()
                if name.endswith("proj.weight"))
        w = model.lm_head_weight
        return n + w.numel() * w.element_size()
