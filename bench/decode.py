"""Fused decode step (sampling + budget forcing) against the torch reference, torch.compile of
it and FlashInfer's samplers.

GPU: B in {1, 8, 64, 256}, V = 152,064, bf16 logits; greedy, temperature, top-p 0.95 and
top-k 50 + top-p 0.95, each without budget forcing (rows in the answer phase) and with it
(thinking rows below their minimum in "suppress" mode, so the end-of-thinking/EOS mask is
applied every step: the costliest forcing path). The s1kernels step is captured in a CUDA
graph and replayed; bytes = B * V * 2 (one read of the logits) gives the fraction of copy
bandwidth. CPU (quick): tiny shapes, the C++ twin against the torch reference.
"""
from __future__ import annotations

import torch

import common
from s1kernels.ops import decode as D
from s1kernels.ops.decode import Budget, DecodeState, ForcingTokens, Sampling, decode_step

# Qwen2.5-like ids: <|im_start|>, "answer", "\n", "Wait", "Final", " Answer", ":", <|im_end|>, <|endoftext|>
FORCING = ForcingTokens(end_think_ids=[151644], delimiter_completion_ids=[9217, 198], wait_ids=[14190],
                        forced_exit_ids=[151644, 9217, 198, 19357, 21806, 25], eos_ids=[151645, 151643],
                        pad_id=151643)

CASES = {
    "greedy": dict(),
    "temperature": dict(temperature=0.8),
    "top-p 0.95": dict(temperature=0.8, top_p=0.95),
    "top-k 50 + top-p 0.95": dict(temperature=0.8, top_k=50, top_p=0.95),
}


def _setup(B, V, forcing_on, params, device, dtype):
    g = torch.Generator().manual_seed(B)
    logits = (torch.randn(B, V, generator=g) * 3.0).to(dtype)
    # the stop ids never win, so no row leaves its phase while the graph is replayed
    logits[:, [151643, 151644, 151645] if V > 151645 else [1, 2, 3]] = -1e4
    logits = logits.to(device)
    if forcing_on:
        budget = Budget(min_thinking_tokens=2**30, max_thinking_tokens=2**31 - 1, mode="suppress")
        start = "thinking"
    else:
        budget = Budget()
        start = "answer"
    sampling = Sampling(seed=list(range(B)), **params)
    return logits, budget.tensors(B, device), sampling.tensors(B, device), DecodeState.new(B, device, start)


def _forcing_for(V):
    if V > 151645:
        return FORCING
    return ForcingTokens([3], [4, 5], [6], [3, 4, 5, 8], [1, 2], 0)


def _graphed(fn):
    """Captures fn() in a CUDA graph after a warm-up on a side stream; returns the replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def _flashinfer_fn(name, logits, params):
    try:
        import flashinfer.sampling as fs
    except ImportError:
        return None
    B = logits.shape[0]
    t = params.get("temperature", 0.0)
    if name == "top-k 50 + top-p 0.95" and hasattr(fs, "top_k_top_p_sampling_from_logits"):
        return lambda: fs.top_k_top_p_sampling_from_logits(logits / t, params["top_k"], params["top_p"])
    if name == "top-p 0.95" and hasattr(fs, "top_p_sampling_from_probs"):
        return lambda: fs.top_p_sampling_from_probs(torch.softmax(logits.float() / t, -1), params["top_p"])
    if name == "temperature" and hasattr(fs, "sampling_from_logits"):
        return lambda: fs.sampling_from_logits(logits / t)
    del B
    return None


def run(ctx: common.Context) -> list[common.Row]:
    rows = []
    cuda = ctx.device.type == "cuda"
    dtype = torch.bfloat16
    cases = CASES
    if ctx.quick:
        sizes, V = [1, 8], 4099
        cases = {k: CASES[k] for k in ("greedy", "top-k 50 + top-p 0.95")}
    else:
        sizes, V = [1, 8, 64, 256], 152064
    forcing = _forcing_for(V)
    compiled = None
    if cuda:
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        compiled = torch.compile(D.reference_decode_step)
    for B in sizes:
        for name, params in cases.items():
            for forcing_on in (False, True):
                case = f"B={B} V={V} bf16 {name}" + (" +forcing" if forcing_on else "")
                nbytes = B * V * 2
                logits, bt, stt, state = _setup(B, V, forcing_on, params, ctx.device, dtype)
                if cuda:
                    step = lambda: decode_step(logits, state, bt, stt, forcing, backend="cuda")  # noqa: E731
                    try:
                        fn, note = _graphed(step), "CUDA graph"
                    except Exception as e:  # reported as a failed row by measure()
                        fn, note = step, f"eager (capture failed: {type(e).__name__})"
                    rows.append(common.measure("decode", case, "s1kernels", fn, ctx, bytes=nbytes, note=note))
                else:
                    rows.append(common.measure("decode", case, "s1kernels",
                                               lambda: decode_step(logits, state, bt, stt, forcing, backend="cpp"),
                                               ctx, bytes=nbytes, note="C++ CPU twin"))
                ref_state = state.clone()
                rows.append(common.measure(
                    "decode", case, "torch",
                    lambda: D.reference_decode_step(logits, ref_state, bt, stt, forcing, V), ctx, bytes=nbytes))
                if compiled is not None:
                    c_state = state.clone()
                    rows.append(common.measure("decode", case, "torch.compile",
                                               lambda: compiled(logits, c_state, bt, stt, forcing, V), ctx,
                                               bytes=nbytes))
                if cuda and not forcing_on:
                    fi = _flashinfer_fn(name, logits, params)
                    if fi is not None:
                        rows.append(common.measure("decode", case, "flashinfer", fi, ctx, bytes=nbytes,
                                                   note="sampling only, no forcing"))
    return rows
