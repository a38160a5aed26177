"""The fused linear + cross-entropy loss inside transformers causal-LM models.

`patch(model)` replaces the forward of a Qwen2 / Llama / Qwen3 (or any `*ForCausalLM` with
`.model` and `.lm_head`) so that, when it is training and is given labels, the loss comes
from `s1kernels.ops.loss.linear_cross_entropy` on the final hidden states: the
[tokens x vocab] logits are never built. Everything else is what transformers does:

- labels are shifted as `ForCausalLMLoss` shifts them (pad one `ignore_index` on the right,
  drop the first column), or taken as given through `shift_labels`;
- `num_items_in_batch` (what `Trainer` passes for exact gradient accumulation) replaces the
  mean's denominator, exactly like transformers' sum / num_items;
- padding-free packed batches (`DataCollatorWithFlattening`, TRL `padding_free=True`) carry
  `position_ids` that restart at 0 for every sample; with `normalize="sequence"` these
  boundaries give the per-sample mean that s1 uses;
- `vocab_size` (e.g. `len(tokenizer)`) keeps the padded rows of the lm_head out of the softmax.

Outside training, or without labels, the original forward runs unchanged (logits returned).
"""
from __future__ import annotations

import dataclasses
import types

import torch

from s1kernels import checks
from s1kernels.ops.loss import IGNORE_INDEX, linear_cross_entropy

__all__ = ["patch", "unpatch", "is_patched", "packed_cu_seqlens"]

_ATTR = "_s1kernels_lce"  # the options of a patched model or class


@dataclasses.dataclass(frozen=True)
class _Options:
    vocab_size: int | None
    normalize: str
    backend: str
    ignore_index: int
    always: bool  # fused loss also in eval mode (logits are then not returned)


def packed_cu_seqlens(position_ids: torch.Tensor) -> torch.Tensor:
    """Sample boundaries [S+1] of a flattened batch from its `position_ids` (0 starts a sample)."""
    pos = position_ids.reshape(-1)
    n = pos.numel()
    starts = torch.nonzero(pos == 0).reshape(-1)
    if starts.numel() == 0 or int(starts[0]) != 0:
        starts = torch.cat([torch.zeros(1, dtype=starts.dtype, device=starts.device), starts])
    return torch.cat([starts, torch.tensor([n], dtype=starts.dtype, device=starts.device)]).to(torch.int64)


def _check_model(obj) -> type:
    cls = obj if isinstance(obj, type) else type(obj)
    if not isinstance(obj, type) and not isinstance(obj, torch.nn.Module):
        raise checks.argument_error("model", "a transformers causal-LM model or class", type(obj).__name__, TypeError)
    if not isinstance(obj, type):
        missing = [a for a in ("model", "lm_head") if not hasattr(obj, a)]
        if missing:
            raise checks.argument_error("model", "a *ForCausalLM with .model and .lm_head",
                                        f"a {cls.__name__}, which has no {', '.join(missing)}", TypeError)
    return cls


def patch(model, *, vocab_size: int | None = None, normalize: str = "token", backend: str = "auto",
          ignore_index: int = IGNORE_INDEX, fused_in_eval: bool = False):
    """Make a transformers causal LM compute its training loss with `linear_cross_entropy`.

    Args:
        model: a model instance (patched alone) or a class such as `Qwen2ForCausalLM`
            (every instance, also those created later).
        vocab_size: the tokenizer's real vocabulary size; lm_head rows at or past it are left
            out of the softmax. Default: every row, as transformers does.
        normalize: "token" (transformers' mean over trained tokens) or "sequence" (mean per
            sample, then over samples; samples from `position_ids` of a packed batch, else
            one per batch row).
        backend: the loss backend ("auto", "triton", "torch", ...), as `linear_cross_entropy`.
        fused_in_eval: also use the fused loss when not training (no logits are returned).

    Returns the model (or class), patched in place. `unpatch` restores it.
    """
    cls = _check_model(model)
    if normalize not in ("token", "sequence"):
        raise checks.argument_error("normalize", "'token' or 'sequence'", repr(normalize))
    if vocab_size is not None and (not checks.is_int(vocab_size) or vocab_size < 1):
        raise checks.argument_error("vocab_size", "a positive int or None", repr(vocab_size))
    if not checks.is_int(ignore_index):
        raise checks.argument_error("ignore_index", "an int", type(ignore_index).__name__, TypeError)
    opts = _Options(vocab_size, normalize, backend, ignore_index, bool(fused_in_eval))
    if is_patched(model):
        unpatch(model)
    saved = {name: vars(model)[name] for name in ("forward", "accepts_loss_kwargs") if name in vars(model)}
    setattr(model, _ATTR, (opts, saved))
    model.forward = _fused_forward if isinstance(model, type) else types.MethodType(_fused_forward, model)
    if normalize == "sequence":
        # Trainer passes num_items_in_batch (a token count) only to models that accept loss
        # kwargs, and then does not divide by the accumulation steps itself. A per-sample
        # mean needs a sample count instead, so let Trainer average the micro-batches.
        model.accepts_loss_kwargs = False
    return model


def unpatch(model):
    """Restore what `patch` replaced."""
    if not is_patched(model):
        return model
    _, saved = vars(model)[_ATTR]
    for name in ("forward", "accepts_loss_kwargs"):
        if name in saved:
            setattr(model, name, saved[name])
        elif name in vars(model):
            delattr(model, name)
    delattr(model, _ATTR)
    return model


def is_patched(model) -> bool:
    """True when `patch` was applied to this model instance or class itself."""
    return _ATTR in vars(model)


def _original_forward(self):
    """The forward `patch` replaced: the class's own (or a base class's) forward."""
    for klass in type(self).__mro__:
        own = vars(klass)
        if _ATTR in own:
            saved = own[_ATTR][1]
            if "forward" in saved:
                return saved["forward"].__get__(self)
            continue
        if "forward" in own and own["forward"] is not _fused_forward:
            return own["forward"].__get__(self)
    raise TypeError(f"{type(self).__name__}: no forward to fall back to")


def _options(self) -> _Options:
    found = vars(self).get(_ATTR)
    if found is None:
        found = next(vars(k)[_ATTR] for k in type(self).__mro__ if _ATTR in vars(k))
    return found[0]


def _fused_forward(self, input_ids=None, labels=None, shift_labels=None, num_items_in_batch=None,
                   fused_lm_head=False, **kwargs):
    opts = _options(self)
    wants_loss = labels is not None or shift_labels is not None
    if not fused_lm_head and not (wants_loss and (self.training or opts.always)):
        for name, value in (("labels", labels), ("shift_labels", shift_labels),
                            ("num_items_in_batch", num_items_in_batch)):
            if value is not None:
                kwargs[name] = value
        saved = vars(self).get(_ATTR, (None, {}))[1]
        original = saved["forward"] if "forward" in saved else _original_forward(self)
        return original(input_ids=input_ids, **kwargs)
    if not wants_loss:
        raise checks.argument_error("fused_lm_head=True", "labels or shift_labels", "neither")
    kwargs.pop("logits_to_keep", None)  # every position is scored: nothing to keep
    if fused_lm_head:
        kwargs["use_cache"] = False
    outputs = self.model(input_ids=input_ids, **kwargs)
    hidden = outputs[0]
    shifted_here = shift_labels is None
    if shifted_here:
        shift_labels = torch.nn.functional.pad(labels, (0, 1), value=opts.ignore_index)[..., 1:]
    if shift_labels.shape != hidden.shape[:-1]:
        raise checks.argument_error("labels", f"shape {tuple(hidden.shape[:-1])} (batch, sequence)",
                                    tuple(shift_labels.shape))
    weight = self.lm_head.weight
    bias = getattr(self.lm_head, "bias", None)
    if hidden.dtype != weight.dtype:  # e.g. an fp32 final norm under a bf16 lm_head
        hidden = hidden.to(weight.dtype)
    hidden = hidden.to(weight.device)
    shift_labels = shift_labels.to(weight.device)
    if fused_lm_head:
        if shifted_here:  # as TRL's head: (batch, seq_len - 1) when it shifts the labels itself
            hidden, shift_labels = hidden[:, :-1], shift_labels[:, :-1]
        return _trl_fused_output(opts, hidden, shift_labels, weight, bias, num_items_in_batch)
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_labels = shift_labels.reshape(-1)
    cu_seqlens = None
    if opts.normalize == "sequence":
        position_ids = kwargs.get("position_ids")
        if position_ids is not None and hidden.shape[0] == 1:
            cu_seqlens = packed_cu_seqlens(position_ids).to(flat_hidden.device)
        else:
            b, t = hidden.shape[:2]
            cu_seqlens = torch.arange(0, b * t + 1, t, dtype=torch.int64, device=flat_hidden.device)
    num_items = None
    if num_items_in_batch is not None:
        num_items = torch.as_tensor(num_items_in_batch, device=flat_hidden.device).reshape(1)
    loss = linear_cross_entropy(flat_hidden, weight, flat_labels, cu_seqlens=cu_seqlens,
                                ignore_index=opts.ignore_index, normalize=opts.normalize, num_items=num_items,
                                vocab_size=opts.vocab_size, bias=bias, backend=opts.backend)
    return _causal_lm_output(loss, outputs)


def _trl_fused_output(opts, hidden, shift_labels, weight, bias, num_items_in_batch):
    """TRL's `fused_lm_head=True` protocol (its SFT/GRPO trainers call the model this way):
    per-token log-probabilities, entropy and top-1 flags of the next-token labels, zero where
    ignored, shaped like the labels, computed by s1kernels' fused loss."""
    from trl.trainer.utils import FusedCausalLMOutput

    mask = shift_labels != opts.ignore_index
    h = hidden[mask]  # only trained positions are scored
    y = shift_labels[mask]
    token_loss, stats = linear_cross_entropy(h, weight, y, ignore_index=opts.ignore_index, reduction="none",
                                             vocab_size=opts.vocab_size, bias=bias, backend=opts.backend,
                                             return_stats=True)
    with torch.no_grad():  # a metric TRL logs: one more pass over the lm_head, in chunks, no gradient
        entropy = _entropy(h.detach(), weight.detach(), None if bias is None else bias.detach(), opts.vocab_size)
    scatter = lambda x: x.new_zeros(mask.shape).masked_scatter(mask, x)  # noqa: E731
    log_probs = scatter(-token_loss)
    count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    return FusedCausalLMOutput(loss=-log_probs.sum() / count, log_probs=log_probs, entropy=scatter(entropy),
                               is_top1=scatter(stats["correct"].to(log_probs.dtype)).bool(), label_mask=mask)


def _entropy(h, weight, bias, vocab_size, chunk: int = 1024):
    out = []
    for i in range(0, h.shape[0], chunk):
        logits = (h[i:i + chunk] @ weight.T).float()
        if bias is not None:
            logits = logits + bias.float()
        if vocab_size is not None:
            logits = logits[:, :vocab_size]
        logp = torch.log_softmax(logits, dim=-1)
        out.append(-(logp.exp() * logp).sum(-1))
    return torch.cat(out) if out else h.new_zeros(0, dtype=torch.float32)


def _causal_lm_output(loss, outputs):
    from transformers.modeling_outputs import CausalLMOutputWithPast

    fields = {f.name for f in dataclasses.fields(CausalLMOutputWithPast)}
    extra = {}
    for name in ("cache", "past_key_values"):  # the cache field was renamed in transformers 5
        if name in fields and name in outputs:
            extra[name] = outputs[name]
    return CausalLMOutputWithPast(loss=loss, logits=None, hidden_states=outputs.get("hidden_states"),
                                  attentions=outputs.get("attentions"), **extra)
