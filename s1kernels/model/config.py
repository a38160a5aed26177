"""Model configuration: the fields of a Hugging Face Qwen2/Qwen2.5 or Llama config.json.

Both the legacy layout (`rope_theta` + `rope_scaling` at the top level) and the newer
`rope_parameters` dict are read; `to_hf_dict` writes the legacy layout, which every
transformers and vLLM version understands.
"""
from __future__ import annotations

import dataclasses
import json
import os

from s1kernels import checks
from s1kernels.checks import read_json

SUPPORTED_MODEL_TYPES = ("qwen2", "llama")
_ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}
_ROPE_TYPES = ("default", "linear", "llama3")
# Upper bounds far above every released Qwen2/Llama (405B: 126 layers, hidden 16384, 128 heads,
# vocab 152k) that still keep a mistyped config.json from allocating for hours.
_BOUNDS = {"vocab_size": 1 << 24, "hidden_size": 1 << 17, "intermediate_size": 1 << 20,
           "num_hidden_layers": 4096, "num_attention_heads": 4096, "num_key_value_heads": 4096,
           "head_dim": 8192, "max_position_embeddings": 1 << 26}


# rope_scaling keys each kind needs (and optional ones, with transformers' defaults), all
# finite numbers > 0; original_max_position_embeddings a positive int.
_ROPE_KEYS = {"linear": (("factor",), ()),
              "llama3": (("factor", "original_max_position_embeddings"), ("low_freq_factor", "high_freq_factor"))}


def _check_rope_scaling(kind: str, s: dict) -> None:
    required, optional = _ROPE_KEYS[kind]
    missing = [k for k in required if k not in s]
    if missing:
        raise ValueError(f"rope_scaling: rope_type {kind!r} needs {', '.join(required)}; missing {', '.join(missing)}")
    for k in (*required, *(k for k in optional if k in s)):
        v = s[k]
        if not checks.is_number(v) or not 0 < v < 1e30:
            raise ValueError(f"rope_scaling: {k} must be a finite number > 0, got {v!r}")
    if kind == "llama3":
        if not isinstance(s["original_max_position_embeddings"], int):
            raise ValueError(f"rope_scaling: original_max_position_embeddings must be an int, "
                             f"got {s['original_max_position_embeddings']!r}")
        low, high = s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0)
        if not high > low:  # the smoothing divides by high - low
            raise ValueError(f"rope_scaling: high_freq_factor must exceed low_freq_factor, got {high!r} <= {low!r}")


@dataclasses.dataclass
class ModelConfig:
    """Decoder hyper-parameters with Hugging Face names.

    `attention_bias` defaults per family when left None: Qwen2 has q/k/v biases, Llama none.
    `head_dim` defaults to hidden_size // num_attention_heads.
    """

    vocab_size: int = 151936
    hidden_size: int = 896
    intermediate_size: int = 4864
    num_hidden_layers: int = 24
    num_attention_heads: int = 14
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    rope_theta: float = 1000000.0
    rope_scaling: dict | None = None
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    attention_bias: bool | None = None
    mlp_bias: bool = False
    max_position_embeddings: int = 32768
    model_type: str = "qwen2"
    hidden_act: str = "silu"
    bos_token_id: int | None = None
    eos_token_id: int | list | None = None
    pad_token_id: int | None = None
    initializer_range: float = 0.02

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise checks.argument_error("model_type", f"one of {SUPPORTED_MODEL_TYPES}", repr(self.model_type))
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.attention_bias is None:
            self.attention_bias = self.model_type == "qwen2"
        if self.hidden_act != "silu":
            raise ValueError(f"hidden_act: only 'silu' (SwiGLU) is supported, got {self.hidden_act!r}")
        for name, bound in _BOUNDS.items():
            v = getattr(self, name)
            if not checks.is_int(v) or v <= 0:
                raise checks.argument_error(name, "a positive int", repr(v))
            if v > bound:  # checked before anything is allocated: a typo must not hang the loader
                raise ValueError(f"{name}: {v} is beyond any supported model (at most {bound})")
        for name in ("rope_theta", "rms_norm_eps"):
            v = getattr(self, name)
            if not checks.is_number(v) or not 0 < v < 1e30:
                raise checks.argument_error(name, "a finite positive number", repr(v))
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_key_value_heads: must divide num_attention_heads={self.num_attention_heads}, "
                             f"got {self.num_key_value_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim: RoPE needs an even head_dim, got {self.head_dim}")
        if self.rope_scaling is not None:
            if not isinstance(self.rope_scaling, dict):
                raise checks.argument_error("rope_scaling", "an object or null", repr(self.rope_scaling))
            kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type", "default"))
            if kind not in _ROPE_TYPES:
                raise ValueError(f"rope_scaling: rope_type must be one of {_ROPE_TYPES}, got {kind!r}")
            if kind == "default":
                self.rope_scaling = None
            else:
                _check_rope_scaling(kind, self.rope_scaling)
        for name in ("tie_word_embeddings", "attention_bias", "mlp_bias"):
            v = getattr(self, name)
            if not isinstance(v, bool):  # "no" and "false" are truthy strings: never guess
                raise checks.argument_error(name, "true or false", repr(v))

    @property
    def rope_type(self) -> str:
        if self.rope_scaling is None:
            return "default"
        return self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Builds a config from a HF config dict; unknown keys are ignored."""
        d = dict(d)
        rope = d.pop("rope_parameters", None)
        if isinstance(rope, dict):
            rope = dict(rope)
            d.setdefault("rope_theta", rope.pop("rope_theta", 10000.0))
            kind = rope.get("rope_type", "default")
            if kind != "default" and d.get("rope_scaling") is None:
                d["rope_scaling"] = rope
        if isinstance(d.get("rope_scaling"), dict):
            d["rope_scaling"] = {k: v for k, v in d["rope_scaling"].items() if k != "rope_theta"}
        if "model_type" not in d:
            raise checks.argument_error("config: 'model_type'", "'qwen2' or 'llama'", "nothing (it is missing)")
        if d.get("sliding_window") and d.get("use_sliding_window"):
            raise ValueError("config: sliding-window attention (use_sliding_window=true) is not supported")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_json(cls, path: str) -> "ModelConfig":
        """Reads a config.json (a file, or a folder holding one) with a clear error when malformed."""
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config: no config.json at {path!r}")
        d = read_json(path, "config", expect_object=True)
        try:
            return cls.from_dict(d)
        except TypeError as e:
            raise ValueError(f"config: {path!r} has bad fields ({e})") from None

    def to_hf_dict(self) -> dict:
        """The config.json content that transformers reads for this model."""
        d = dataclasses.asdict(self)
        d["architectures"] = [_ARCHITECTURES[self.model_type]]
        if self.model_type == "qwen2":
            d.pop("mlp_bias")
            if not self.attention_bias:
                raise ValueError("attention_bias: Qwen2 checkpoints always carry q/k/v biases; use model_type='llama'")
            d.pop("attention_bias")
            d["use_sliding_window"] = False
            d["sliding_window"] = None
            d["max_window_layers"] = self.num_hidden_layers
        d["use_cache"] = True
        return d

    def save(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(self.to_hf_dict(), f, indent=2)

    def num_params(self) -> int:
        """Parameter count (tied embeddings counted once)."""
        h, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q, kv = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        attn = h * q + 2 * h * kv + q * h + (q + 2 * kv if self.attention_bias else 0)
        mlp = 3 * h * i
        layer = attn + mlp + 2 * h
        emb = v * h * (1 if self.tie_word_embeddings else 2)
        return self.num_hidden_layers * layer + emb + h
