"""Every TrainConfig field checked for type and range before any work starts.

A wrong type raises TypeError, a value out of range ValueError; both name the field and its
flag, what was expected and what came (the CLI turns them into exit status 2 and one line).
"""
from __future__ import annotations

import math

from s1kernels import checks

_CHOICES = {"normalize": ("token", "sequence"), "overlong": ("truncate", "drop", "error")}
# (minimum, maximum) of integer fields; None: no bound on that side
_INTS = {"max_steps": (1, 10**9), "block_size": (2, 1 << 24), "micro_batch": (1, 1 << 20),
         "grad_accum": (1, 1 << 20), "seed": (0, 2**63 - 1), "synthetic_rows": (1, 10**8),
         "max_samples": (1, None), "vocab_size": (1, 1 << 24), "save_every": (0, None), "keep_checkpoints": (0, None),
         "log_every": (1, None), "eval_rows": (0, 10**7), "threads": (1, 4096),
         "hidden_size": (1, 1 << 17), "num_hidden_layers": (1, 4096), "num_attention_heads": (1, 4096),
         "num_key_value_heads": (1, 4096), "intermediate_size": (1, 1 << 20)}
# (minimum, maximum, minimum allowed) of float fields
_FLOATS = {"lr": (0.0, 1e3, False), "min_lr_ratio": (0.0, 1.0, True), "weight_decay": (0.0, 1e3, True),
           "warmup_ratio": (0.0, 1.0, True), "epochs": (0.0, 1e6, False), "max_grad_norm": (0.0, 1e30, True)}
_OPTIONAL = ("model", "data", "max_steps", "max_samples", "resume", "threads", "bf16", "vocab_size")
_BOOLS = ("gradient_checkpointing", "progress", "overwrite", "bf16")
_STRINGS = ("model", "data", "output", "resume", "loss_backend")


def _name(field: str) -> str:
    return f"{field} (--{field.replace('_', '-')})"


def check_train_config(cfg) -> None:
    for field, value in vars(cfg).items():
        if value is None and field in _OPTIONAL:
            continue
        name = _name(field)
        if field in _BOOLS:
            if not isinstance(value, bool):
                raise checks.argument_error(name, "true or false", repr(value), TypeError)
        elif field in _STRINGS:
            if not isinstance(value, str) or not value or "\0" in value:
                raise checks.argument_error(name, "a non-empty path or name", repr(value), TypeError)
        elif field in _CHOICES:
            if value not in _CHOICES[field]:
                raise checks.argument_error(name, f"one of {_CHOICES[field]}", repr(value))
        elif field in _INTS:
            lo, hi = _INTS[field]
            if not checks.is_int(value):
                raise checks.argument_error(name, "an integer", repr(value), TypeError)
            if value < lo or (hi is not None and value > hi):
                rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
                raise checks.argument_error(name, f"an integer {rng}", value)
        elif field in _FLOATS:
            _check_float(name, value, *_FLOATS[field])
        elif field == "betas":
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise checks.argument_error(name, "two numbers", repr(value), TypeError)
            for b in value:
                _check_float(name, b, 0.0, 1.0, True, below_max=True)


def _check_float(name, value, lo, hi, lo_ok, below_max=False) -> None:
    if not checks.is_number(value):
        raise checks.argument_error(name, "a number", repr(value), TypeError)
    ok = math.isfinite(value) and (value >= lo if lo_ok else value > lo) and (value < hi if below_max else value <= hi)
    if not ok:
        left, right = "[" if lo_ok else "(", ")" if below_max else "]"
        raise checks.argument_error(name, f"a finite number in {left}{lo}, {hi}{right}", repr(value))
