"""Short cases of each GPU kernel, small enough to run under compute-sanitizer in seconds.

    python bench/sanitize_cases.py decode loss similarity            # on the GPU
    compute-sanitizer --tool memcheck --error-exitcode 1 python bench/sanitize_cases.py decode
    python bench/sanitize_cases.py all --device cpu                   # the same cases on CPU

Each case runs the kernel on awkward sizes (a vocabulary of 4099, partial tiles in every
dimension, rows that are not 16-byte aligned), checks the result against the CPU twin or
the torch reference, and exits non-zero on a mismatch, so a sanitizer run also proves the
kernel computed the right thing while it was watched. On CPU (`--device cpu`, used by the CI
rehearsal of bench/gpu_proof.py) the same cases run through the C++ twin and the Triton
interpreter, which keeps this script from rotting while no GPU is around.
"""
from __future__ import annotations

import argparse
import os
import sys

CASES = ("decode", "loss", "similarity")


def _setup(device: str):
    if device == "cpu":  # Triton on CPU tensors needs the interpreter, set before triton loads
        os.environ["TRITON_INTERPRET"] = "1"
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def relerr(a, b) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def case_decode(device: str) -> str:
    import torch
    from s1kernels.ops.decode import Budget, DecodeState, ForcingTokens, Sampling, decode_step

    forcing = ForcingTokens([3], [4, 5], [6], [3, 4, 5, 8], [1, 2], 0)
    # GPU: the kernel against the C++ twin (the CUDA tests' oracle); CPU: the twin against the
    # torch reference, which is slow, hence fewer rows and steps there
    backend, oracle = ("cuda", "cpp") if device == "cuda" else ("cpp", "torch")
    B, V, steps = (33, 4099, 12) if device == "cuda" else (5, 4099, 6)
    g = torch.Generator().manual_seed(0)
    budget = Budget(min_thinking_tokens=[i % 5 for i in range(B)], max_thinking_tokens=[4 + i % 7 for i in range(B)],
                    num_waits=1, max_answer_tokens=5)
    for params in (dict(), dict(temperature=0.8, top_k=50, top_p=0.95)):
        sampling = Sampling(seed=list(range(B)), **params)
        bt_d, st_d = budget.tensors(B, device), sampling.tensors(B, device)
        bt_c, st_c = budget.tensors(B, "cpu"), sampling.tensors(B, "cpu")
        s_d, s_c = DecodeState.new(B, device), DecodeState.new(B)
        for step in range(steps):
            x = (torch.randn(B, V + 1, generator=g) * 3).to(torch.bfloat16)
            x_dev = x.to(device)[:, 1:]  # rows that are not 16-byte aligned: the scalar load path
            t_d, l_d = decode_step(x_dev, s_d, bt_d, st_d, forcing, backend=backend)
            t_c, l_c = decode_step(x[:, 1:].contiguous(), s_c, bt_c, st_c, forcing, backend=oracle)
            wrong = int((t_d.cpu() != t_c).sum())
            # greedy and the forcing state machine agree exactly; a sampled token may differ
            # where a value sits within fp32 rounding of a filter boundary (fp32 vs fp64)
            if wrong > (0 if not params else 1):
                raise AssertionError(f"decode {params or 'greedy'} step {step}: {wrong} of {B} tokens differ")
            if not params:
                same = t_d.cpu() == t_c
                if not torch.allclose(l_d.cpu()[same], l_c[same], atol=1e-3, rtol=1e-3):
                    raise AssertionError(f"decode greedy step {step}: logprobs differ")
    return (f"decode ({backend} vs {oracle}): B={B} V={V} bf16 unaligned rows, greedy and top-k/top-p, "
            f"{steps} steps with forcing")


def case_loss(device: str) -> str:
    import torch
    from s1kernels.ops.loss import linear_cross_entropy, linear_cross_entropy_reference

    g = torch.Generator().manual_seed(1)
    out = []
    # on the GPU the fp32 case leaves a partial tile of the 128-256 wide H100 tiles in every
    # dimension; the interpreter (CPU) runs its own small tiles, so smaller sizes do there
    big = (300, 200, 300) if device == "cuda" else (45, 40, 130)
    for dtype, (n, h, v) in ((torch.bfloat16, (37, 64, 257)), (torch.float32, big)):
        hidden = torch.randn(n, h, generator=g).to(dtype)
        weight = (torch.randn(v, h, generator=g) / h**0.5).to(dtype)
        labels = torch.randint(0, v, (n,), generator=g)
        labels[torch.rand(n, generator=g) < 0.3] = -100
        hd, wd = hidden.to(device).requires_grad_(), weight.to(device).requires_grad_()
        loss = linear_cross_entropy(hd, wd, labels.to(device), backend="triton")
        gh, gw = torch.autograd.grad(loss, [hd, wd])
        hr, wr = hidden.double().requires_grad_(), weight.double().requires_grad_()
        ref = linear_cross_entropy_reference(hr, wr, labels)
        rh, rw = torch.autograd.grad(ref, [hr, wr])
        # bf16 operands; on the GPU fp32 dots run as tf32 (the cuda tests allow 3e-2 there too)
        tol = 2e-2 if dtype == torch.bfloat16 else (3e-2 if device == "cuda" else 1e-4)
        errs = {"loss": relerr(loss, ref), "dhidden": relerr(gh, rh), "dweight": relerr(gw, rw)}
        bad = {k: e for k, e in errs.items() if not e < tol}
        if bad:
            raise AssertionError(f"loss {dtype} N={n} H={h} V={v}: relative error {bad} over {tol}")
        out.append(f"N={n} H={h} V={v} {str(dtype).replace('torch.', '')}")
    return "loss (triton fwd+bwd): " + ", ".join(out)


def case_similarity(device: str) -> str:
    import torch
    from s1kernels.ops import similarity as S

    g = torch.Generator().manual_seed(2)
    out = []
    sizes = ((150, 300, 100), (41, 177, 24)) if device == "cuda" else ((40, 70, 24), (21, 150, 24))
    for dtype, (n, m, d), k in zip((torch.bfloat16, torch.float32), sizes, (16, 100)):
        x = torch.randn(n, d, generator=g).to(dtype)
        y = torch.randn(m, d, generator=g).to(dtype)
        s, i = S.topk_similarity(x.to(device), y.to(device), k, backend="triton")
        rs, ri = S.topk_similarity_reference(x.float(), y.float(), k)
        tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
        if not torch.allclose(s.float().cpu(), rs, atol=tol, rtol=0):
            raise AssertionError(f"similarity {dtype} k={k}: scores differ by {float((s.cpu() - rs).abs().max())}")
        # an index may differ only where its score ties the reference's within the tolerance
        picked = torch.nn.functional.normalize(y.float(), dim=1)[i.cpu()] @ torch.nn.functional.normalize(
            x.float(), dim=1)[:, :, None]
        if not torch.allclose(picked[..., 0], rs, atol=tol, rtol=0):
            raise AssertionError(f"similarity {dtype} k={k}: returned indices do not hold the returned scores")
        out.append(f"top-k N={n} M={m} D={d} k={k} {str(dtype).replace('torch.', '')}")
    x = torch.randn(500, 32, generator=g)
    picks = S.k_center(x.to(device), 20)
    ref = S.k_center_reference(x, 20)
    if picks.cpu().tolist() != ref.tolist():
        raise AssertionError(f"k_center: {picks.cpu().tolist()} != {ref.tolist()}")
    return "similarity: " + ", ".join(out) + ", k-center 20 of 500"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cases", nargs="+", choices=CASES + ("all",))
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = p.parse_args(argv)
    _setup(args.device)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no GPU: use --device cpu", file=sys.stderr)
        return 2
    torch.set_num_threads(min(4, torch.get_num_threads()))
    failed = 0
    for name in (CASES if "all" in args.cases else args.cases):
        try:
            what = globals()[f"case_{name}"](args.device)
            if args.device == "cuda":
                torch.cuda.synchronize()
            print(f"ok {what}", flush=True)
        except Exception as e:  # report every case, then fail
            failed += 1
            print(f"FAILED {name}: {type(e).__name__}: {e}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
