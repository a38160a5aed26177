"""Test setup shared by the whole suite.

Without a GPU, Triton kernels run in the interpreter (TRITON_INTERPRET=1 must be set before
triton is imported, hence here), and tests marked `cuda` are skipped with a reason.

With a GPU the interpreter stays off, so the `cuda` tests compile Triton for the device; the
tests marked `interpreter` (Triton kernels on CPU tensors) are then skipped with the command
that runs them: `CUDA_VISIBLE_DEVICES= python -m pytest tests -m interpreter`.
"""
import os
import random
import zlib

import numpy as np
import pytest

try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _HAS_CUDA = False

if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")


_INTERPRETER = os.environ.get("TRITON_INTERPRET", "0") == "1"

NO_INTERPRETER = ("runs Triton on CPU tensors, which needs TRITON_INTERPRET=1; it is off here"
                  + (" because a GPU is visible (the cuda tests compile Triton for it)" if _HAS_CUDA else "")
                  + ": run `CUDA_VISIBLE_DEVICES= python -m pytest tests -m interpreter`")


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")
    skip_interp = pytest.mark.skip(reason=NO_INTERPRETER)
    for item in items:
        if "cuda" in item.keywords and not _HAS_CUDA:
            item.add_marker(skip_cuda)
        if "interpreter" in item.keywords and not _INTERPRETER:
            item.add_marker(skip_interp)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The suite's models and kernels run at tiny shapes, where waking a thread pool costs
    more than the op, and CI runs two test workers on two cores: one thread each."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed_per_test(request):
    """Random inputs differ from test to test but are the same on every run, so a failure
    reproduces and CI cannot flake on an unlucky draw."""
    s = zlib.crc32(request.node.nodeid.encode())
    random.seed(s)
    torch.manual_seed(s)
    np.random.seed(s)


# The tiny stand-ins many tests share: the built-in tokenizer, a random 2-layer Qwen2 on it
# and that model saved as an HF-format folder. A test module that needs another shape
# defines its own fixture of the same name.
@pytest.fixture(scope="module")
def tok():
    from s1kernels.data.tokenizer import build_default_tokenizer

    return build_default_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    # std 0.3: logits are spread out (no near-ties) and the greedy path wanders over the
    # vocabulary, so frequent tokens chosen as "end of thinking" and EOS come up
    from s1kernels.model import ModelConfig, Transformer

    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      initializer_range=0.3)
    return Transformer(cfg).init_weights(seed=0).eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, model, tok):
    from s1kernels.model import save_model

    folder = tmp_path_factory.mktemp("tiny_model")
    save_model(model, str(folder))
    tok.save(str(folder))
    return str(folder)
