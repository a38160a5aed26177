"""Peak memory of one transformers training step at Qwen2.5's vocabulary, patched vs unpatched.

    python bench/hf_step_memory_cpu.py              # V=152,064, 2 x 1024 tokens; writes
                                                    # bench/results/hf-step-memory-cpu.md
    python bench/hf_step_memory_cpu.py --out -      # table to stdout only

A small Qwen2ForCausalLM (hidden 256, 2 layers) with Qwen2.5's padded lm_head (152,064 rows)
runs one training step (forward with labels, backward, AdamW step) in a fresh process:
as transformers ships it (logits + cross-entropy), and after
`s1kernels.integrations.transformers.patch(model)`. The peak is the growth of the resident
set during the step, beyond the weights, gradients and optimizer state that a warm-up step
created (VmHWM reset through /proc/self/clear_refs; glibc's mmap threshold pinned so freed
tensors leave the resident set).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import subprocess
import sys
import time


from cpu_report import status_kb, write_report

HERE = os.path.dirname(os.path.abspath(__file__))
IMPLS = {"transformers (logits + cross-entropy)": "plain", "s1kernels patch (fused linear cross-entropy)": "patched"}


def measure_one(impl: str, batch: int, seq: int, vocab: int, hidden: int) -> dict:
    ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD, fixed
    import torch
    import transformers

    from s1kernels.integrations.transformers import patch

    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=max(seq, 128), tie_word_embeddings=False)
    model = transformers.Qwen2ForCausalLM(cfg).train()
    if impl == "patched":
        patch(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    labels = ids.clone()
    labels[:, : seq // 4] = -100  # a prompt that is not trained

    def step(x, y):
        loss = model(input_ids=x, labels=y).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
        return float(loss)

    step(ids[:, :16], labels[:, :16])  # warm-up: optimizer state and gradient buffers exist from here
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status_kb("VmRSS")
    t0 = time.perf_counter()
    loss = step(ids, labels)
    seconds = time.perf_counter() - t0
    peak = status_kb("VmHWM")
    n_params = sum(p.numel() for p in model.parameters())
    return {"impl": impl, "peak_mb": (peak - base) / 1024, "base_mb": base / 1024, "seconds": seconds, "loss": loss,
            "params_m": n_params / 1e6}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=152_064)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--out", default=os.path.join(HERE, "results", "hf-step-memory-cpu.md"))
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args.one, args.batch, args.seq, args.vocab, args.hidden)))
        return 0
    import torch
    import transformers

    results = {}
    for label, impl in IMPLS.items():
        cmd = [sys.executable, os.path.abspath(__file__), "--one", impl, "--batch", str(args.batch), "--seq",
               str(args.seq), "--vocab", str(args.vocab), "--hidden", str(args.hidden)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": os.path.dirname(HERE)})
        results[label] = json.loads(out.stdout.strip().splitlines()[-1])
        print(label, results[label], flush=True)
    plain, fused = (results[k] for k in IMPLS)
    tokens = args.batch * args.seq
    logits_mb = tokens * args.vocab * 4 / 2**20
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    lines = [
        f"# One transformers training step at V={args.vocab:,}: peak memory, patched vs unpatched (CPU)",
        "",
        f"Qwen2ForCausalLM, hidden {args.hidden}, 2 layers, {plain['params_m']:.1f}M parameters, untied lm_head; "
        f"{args.batch} x {args.seq} tokens (a quarter not trained); fp32; forward + backward + AdamW step.",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average {load}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}. "
        f"Command: `python bench/hf_step_memory_cpu.py --batch {args.batch} --seq {args.seq} --vocab {args.vocab}`.",
        f"One [tokens, V] fp32 logits tensor is {logits_mb:.0f} MB.",
        "",
        "| model | peak beyond weights + grads + AdamW state (MB) | seconds | loss |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, r in results.items():
        lines.append(f"| {label} | {r['peak_mb']:.0f} | {r['seconds']:.1f} | {r['loss']:.6f} |")
    lines += ["", f"Peak ratio (patched / unpatched): {fused['peak_mb'] / plain['peak_mb']:.3f}; "
              f"loss difference {abs(fused['loss'] - plain['loss']):.2e}. Seconds are on a shared, loaded machine."]
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
