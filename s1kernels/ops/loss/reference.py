"""The loss's oracle: `linear_cross_entropy_reference` materialises the [N, V] logits (fp32,
or fp64 for fp64 inputs) and is what the tests compare every backend against. It is not a
backend and no fast path uses it; the argument checks and the reduction it shares with the
op are in contract.py.
"""
from __future__ import annotations

import torch

from s1kernels.ops.loss.contract import IGNORE_INDEX, _check_inputs, _reduce, _stats


def linear_cross_entropy_reference(hidden, weight, labels, *, cu_seqlens=None, ignore_index=IGNORE_INDEX,
                                   reduction="mean", normalize="token", num_items=None, z_loss=0.0,
                                   softcap=None, vocab_size=None, bias=None, return_stats=False,
                                   validate=True):
    """Plain reference: materialises [N, V] logits; fp64 when inputs are fp64, else fp32.

    Same arguments and results as `linear_cross_entropy`; differentiable through torch autograd.
    """
    vocab_size = _check_inputs(hidden, weight, labels, bias, cu_seqlens, num_items, ignore_index, reduction,
                               normalize, z_loss, softcap, vocab_size, "torch", validate)
    ct = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    logits = hidden.to(ct) @ weight.to(ct).T
    if bias is not None:
        logits = logits + bias.to(ct)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    logits = logits[:, :vocab_size]  # rows past the tokenizer's vocabulary take no probability
    lse = torch.logsumexp(logits, dim=-1)
    valid = labels != ignore_index
    # an out-of-range label (possible with validate=False) has no target logit, on every backend
    inside = valid & (labels >= 0) & (labels < vocab_size)
    target = torch.where(inside, labels, torch.zeros_like(labels)).long()
    target_logit = torch.where(inside, logits.gather(1, target[:, None])[:, 0], torch.zeros_like(lse))
    token_loss = lse - target_logit + z_loss * lse * lse
    token_loss = torch.where(valid, token_loss, torch.zeros_like(token_loss))
    loss = _reduce(token_loss, labels, cu_seqlens, ignore_index, reduction, normalize, num_items)
    if not return_stats:
        return loss
    lse = torch.where(valid, lse, torch.zeros_like(lse))
    return loss, _stats(token_loss, lse, logits.argmax(-1), labels, ignore_index)
