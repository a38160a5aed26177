"""What the stage APIs share at run time: the device/dtype defaults, the one model + tokenizer
loader (`load_model_and_tokenizer`, used by generate, eval and train) and the CPU thread rule.
The command-line flags that feed them live in s1kernels.cli, which only __main__ modules import.
"""
from __future__ import annotations

import os

import torch

from s1kernels import checks

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_device_dtype(device: str | None, dtype: str | None) -> tuple[torch.device, torch.dtype]:
    """CLI defaults: CUDA when available; bf16 on CUDA, fp32 on CPU."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if isinstance(dtype, torch.dtype):
        dt = dtype
    elif dtype is None or dtype == "auto":
        dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    elif dtype in _DTYPES:
        dt = _DTYPES[dtype]
    else:
        raise checks.argument_error("--dtype", f"one of auto, {', '.join(_DTYPES)}", repr(dtype))
    return dev, dt


def load_model_and_tokenizer(folder: str, device=None, dtype=None, *, shard=None, vocab_size: int | None = None):
    """The one loader of the CLIs: model and tokenizer from a checkpoint folder (config.json,
    safetensors, tokenizer files). `device`/`dtype` as `resolve_device_dtype` (a torch.dtype
    is taken as it is); `shard` is passed to `load_model` (FSDP2 sharded loading). The
    tokenizer must fit the model's vocabulary (`real_vocab_size`, with `vocab_size` as its
    override), checked before the weights are read. The model comes back in eval mode.
    """
    from s1kernels.data.tokenizer import S1Tokenizer, real_vocab_size
    from s1kernels.model import ModelConfig, load_model

    hint = "train one first (python -m s1kernels.train) or pass a Hugging Face model folder"
    if not os.path.exists(folder):
        raise FileNotFoundError(f"--model: folder {folder!r} does not exist; {hint}")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--model: {folder!r} is not a folder; {hint}")
    if not os.path.isfile(os.path.join(folder, "tokenizer.json")):
        raise FileNotFoundError(f"--model: {folder!r} has no tokenizer.json (the checkpoint folder must "
                                f"hold the tokenizer files)")
    tok = S1Tokenizer.from_folder(folder)
    real_vocab_size(tok, ModelConfig.from_json(folder).vocab_size, vocab_size)  # fails before loading
    dev, dt = resolve_device_dtype(device, dtype)
    model = load_model(folder, dtype=dt, device=dev, shard=shard)
    model.eval()
    return model, tok


# Below this size a model's ops are too small to gain from a second thread, and beside another
# busy process torch's OpenMP threads wait for each other on shared cores: two threads on two
# cores made the built-in model's training ~40x slower on a loaded machine where one thread
# lost ~3x (bench/results/train-threads-cpu.md).
SMALL_MODEL_PARAMS = 20_000_000


def idle_cpus(loadavg=os.getloadavg) -> int | None:
    """CPUs the other processes leave free: the CPU count minus the 1-minute load average,
    rounded (None where there is no load average)."""
    try:
        load = float(loadavg()[0])
    except (OSError, AttributeError):
        return None
    return max(0, int((os.cpu_count() or 1) - load + 0.5))


def default_threads(requested: int | None, device: torch.device, n_params: int, loadavg=os.getloadavg) -> int:
    """Applies --threads; without it (and without OMP_NUM_THREADS), on a CPU: one thread for a
    model under SMALL_MODEL_PARAMS, and for a larger one no more threads than the CPUs the
    other processes leave idle (at least one). A thread on a core another process keeps busy
    stalls the others at every OpenMP barrier: SmolLM2-135M generated in 37 s with torch's
    2 threads on a busy 2-core machine, 8.6 s with one. Returns the thread count torch uses."""
    if requested is not None:
        if not checks.is_int(requested) or requested < 1:
            raise checks.argument_error("--threads", "an int >= 1", repr(requested))
        torch.set_num_threads(requested)
    elif device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        if n_params < SMALL_MODEL_PARAMS:
            torch.set_num_threads(1)
        else:
            idle = idle_cpus(loadavg)
            if idle is not None and idle < torch.get_num_threads():
                torch.set_num_threads(max(1, idle))
    return torch.get_num_threads()


def set_cpu_threads(model, threads: int | None) -> int:
    """`default_threads` for `model` (generate, eval and train share the rule)."""
    params = list(model.parameters())
    return default_threads(threads, params[0].device, sum(p.numel() for p in params))
