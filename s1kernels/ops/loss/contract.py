"""The loss's contract, torch only: the argument checks, and the reduction on [N] vectors
(token / sequence normalisation, `num_items`, mean/sum/none) that every backend and the
oracle (reference.py) share.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from s1kernels import checks
from s1kernels.backend import FAMILIES

# Labels equal to it are not trained (as torch.nn.CrossEntropyLoss; data.packing writes it).
IGNORE_INDEX = -100
REDUCTIONS = ("mean", "sum", "none")
NORMALIZATIONS = ("token", "sequence")
# The loss's entries of the one backend vocabulary (s1kernels.backend.FAMILIES["loss"]):
# "torch" is the chunked torch path; this module's oracle is not a backend.
LOSS_BACKENDS = ("auto",) + FAMILIES["loss"]
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


# ----------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------

def _check_inputs(hidden, weight, labels, bias, cu_seqlens, num_items, ignore_index, reduction,
                  normalize, z_loss, softcap, vocab_size, backend, validate):
    """Checks everything that can be checked without reading device memory; returns vocab_size."""
    checks.check_tensor("hidden", hidden, "[N, H]")
    checks.check_tensor("weight", weight, "[V, H]")
    checks.check_tensor("labels", labels, "[N]")
    checks.check_dims("hidden", hidden, 2, "[N, H]")
    checks.check_dims("weight", weight, 2, "[V, H]")
    checks.check_dtype("hidden", hidden, _FLOAT_DTYPES, f"a floating dtype {_FLOAT_DTYPES}")
    checks.check_dtype("weight", weight, hidden.dtype, f"dtype {hidden.dtype} (the dtype of hidden)")
    n, h = hidden.shape
    v = weight.shape[0]
    if weight.shape[1] != h:
        raise checks.argument_error("weight", f"shape [V, {h}] (H of hidden)", tuple(weight.shape))
    if v == 0:
        raise checks.argument_error("weight", "at least one vocabulary row", "V=0")
    checks.check_on_device("weight", weight, hidden.device, "the device of hidden")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise checks.argument_error("labels", f"shape [{n}] (N of hidden)", tuple(labels.shape))
    checks.check_dtype("labels", labels, (torch.int64, torch.int32), "dtype int64 or int32")
    checks.check_on_device("labels", labels, hidden.device)
    if bias is not None:
        checks.check_tensor("bias", bias, "[V] or None")
        if bias.shape != (v,):
            raise checks.argument_error("bias", f"shape [{v}] (V of weight)", tuple(bias.shape))
        checks.check_dtype("bias", bias, hidden.dtype)
        checks.check_on_device("bias", bias, hidden.device)
    checks.check_choice("reduction", reduction, REDUCTIONS)
    checks.check_choice("normalize", normalize, NORMALIZATIONS)
    checks.check_choice("backend", backend, LOSS_BACKENDS)
    checks.check_int_type("ignore_index", ignore_index)
    if not -(2**63) <= ignore_index < 2**63:
        raise checks.argument_error("ignore_index", "an int64 value (labels are int64 or int32)", ignore_index)
    if not checks.is_number(z_loss) or not math.isfinite(z_loss) or z_loss < 0:
        raise checks.argument_error("z_loss", "a finite float >= 0", repr(z_loss))
    if softcap is not None and (not checks.is_number(softcap)
                                or not math.isfinite(softcap) or softcap <= 0):
        raise checks.argument_error("softcap", "None or a finite float > 0", repr(softcap))
    if vocab_size is None:
        vocab_size = v
    if not checks.is_int(vocab_size) or not 1 <= vocab_size <= v:
        raise checks.argument_error("vocab_size", f"an int in [1, {v}] (rows of weight)", repr(vocab_size))
    if 0 <= ignore_index < vocab_size:
        raise checks.argument_error("ignore_index", f"a value outside [0, vocab_size={vocab_size})", ignore_index)
    if num_items is not None:
        if reduction != "mean":
            raise ValueError(f"num_items: only applies to reduction='mean', got reduction={reduction!r}")
        if not isinstance(num_items, Tensor):
            raise checks.argument_error("num_items", "a tensor with one element (kept on device)",
                                        type(num_items).__name__, TypeError)
        if num_items.numel() != 1:
            raise checks.argument_error("num_items", "one element", f"shape {tuple(num_items.shape)}")
        checks.check_on_device("num_items", num_items, hidden.device)
        if num_items.dtype == torch.bool or num_items.is_complex():
            raise checks.argument_error("num_items", "a real number tensor (a count)", f"dtype {num_items.dtype}",
                                        TypeError)
    if cu_seqlens is not None:
        if not isinstance(cu_seqlens, Tensor):
            raise checks.argument_error("cu_seqlens", "an int tensor [S+1] or None", type(cu_seqlens).__name__,
                                        TypeError)
        if cu_seqlens.dim() != 1 or cu_seqlens.shape[0] < 2:
            raise checks.argument_error("cu_seqlens", "shape [S+1] with S >= 1", tuple(cu_seqlens.shape))
        checks.check_dtype("cu_seqlens", cu_seqlens, (torch.int32, torch.int64), "dtype int32 or int64")
        checks.check_on_device("cu_seqlens", cu_seqlens, hidden.device)
    if validate:
        _validate_values(labels, cu_seqlens, n, ignore_index, vocab_size, num_items)
    return vocab_size


def _validate_values(labels, cu_seqlens, n, ignore_index, vocab_size, num_items=None):
    """Checks label range, cu_seqlens contents and that num_items is a positive count; reads
    device memory (a host sync on GPU)."""
    if num_items is not None and num_items.numel() != 0:
        value = float(num_items.reshape(()))
        if not (math.isfinite(value) and value > 0):  # <= 0 would flip or blow up the loss silently
            raise checks.argument_error("num_items", "a finite count > 0 (the mean's denominator)", repr(value))
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= vocab_size))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise checks.argument_error("labels",
                                    f"values in [0, vocab_size={vocab_size}) or ignore_index={ignore_index}",
                                    f"{int(labels[i])} at position {i}")
    if cu_seqlens is not None:
        first, last = int(cu_seqlens[0]), int(cu_seqlens[-1])
        if first != 0 or last != n:
            raise checks.argument_error("cu_seqlens", f"to start at 0 and end at N={n}", f"{first} .. {last}")
        if bool((cu_seqlens[1:] < cu_seqlens[:-1]).any()):
            raise checks.argument_error("cu_seqlens", "non-decreasing boundaries", cu_seqlens.tolist())


# ----------------------------------------------------------------------------------------
# Reduction: token / sequence normalisation on [N] vectors (shared by every backend)
# ----------------------------------------------------------------------------------------

def _token_weights(labels, cu_seqlens, ignore_index, normalize, num_items):
    """Per-token weight w [N] (fp32) and the mean's denominator (device scalar).

    token:    w = 1 on trained tokens; denominator = trained tokens (or num_items).
    sequence: w = 1 / (trained tokens of the token's sample); denominator = samples that
              hold at least one trained token (or num_items). A sample is a cu_seqlens
              segment; without cu_seqlens all N tokens form one sample.
    """
    valid = (labels != ignore_index).to(torch.float32)
    if normalize == "token":
        w = valid
        count = valid.sum()
    else:
        n = labels.shape[0]
        if cu_seqlens is None:
            seg = torch.zeros(n, dtype=torch.long, device=labels.device)
            nseg = 1
        else:
            pos = torch.arange(n, device=labels.device, dtype=cu_seqlens.dtype)
            seg = torch.searchsorted(cu_seqlens[1:].contiguous(), pos, right=True)
            nseg = cu_seqlens.shape[0] - 1
            seg = seg.clamp(max=nseg - 1)
        per_seg = torch.zeros(nseg, dtype=torch.float32, device=labels.device).index_add_(0, seg, valid)
        w = valid / per_seg.clamp(min=1.0)[seg]
        count = (per_seg > 0).to(torch.float32).sum()
    denom = count if num_items is None else num_items.reshape(()).to(torch.float32)
    # All tokens ignored: the sum is 0, so any non-zero denominator gives loss 0 and zero grads.
    denom = torch.where(denom == 0, torch.ones_like(denom), denom)
    return w, denom


def _reduce(token_loss, labels, cu_seqlens, ignore_index, reduction, normalize, num_items):
    if reduction == "none":
        return token_loss
    w, denom = _token_weights(labels, cu_seqlens, ignore_index, normalize, num_items)
    total = (token_loss * w.to(token_loss.dtype)).sum()
    if reduction == "sum":
        return total
    return total / denom.to(total.dtype)


def _stats(token_loss, lse, pred, labels, ignore_index):
    valid = labels != ignore_index
    correct = (pred == labels) & valid
    count = valid.sum().clamp(min=1).to(torch.float32)
    return {
        "token_loss": token_loss.detach(),
        "logsumexp": lse.detach(),
        "correct": correct,
        "accuracy": correct.sum().to(torch.float32) / count,
    }
