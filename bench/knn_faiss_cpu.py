"""Exact self-kNN on a CPU: s1kernels' topk_similarity vs FAISS IndexFlatIP, same threads.

    python bench/knn_faiss_cpu.py --n 100000 --k 10 --threads 2 --reps 3 --out bench/results/knn-faiss-cpu.md

The pool is grown from the s1K questions' MiniLM vectors (../shared/data, 1,000 x 384) with
seeded Gaussian noise and renormalised (as bench/select_cpu.py does), so the rows are unit
vectors and inner product is cosine. s1kernels: ``topk_similarity(x, k=k, exclude_self=True,
normalize=False)``. FAISS: ``IndexFlatIP`` over the same fp32 rows, searched for k+1 and the
row itself dropped. Repetitions are interleaved (s1kernels, FAISS, FAISS, s1kernels, ...);
the ratio s1kernels time / FAISS time is taken per repetition and its median reported.
Neighbours must be the same up to exact ties: per row the score lists agree to 1e-5 and the
index sets are equal except where the k-th score ties the next one.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from cpu_report import machine, write_report  # noqa: E402

from s1kernels.ops.similarity import topk_similarity  # noqa: E402

DATA = os.path.join(HERE, "..", "..", "shared", "data", "s1k_questions.minilm.npy")


def pool(n: int, seed: int = 0) -> np.ndarray:
    path = DATA if os.path.isfile(DATA) else "/work/shared/data/s1k_questions.minilm.npy"
    base = np.load(path).astype(np.float32)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n, base.shape[1]), dtype=np.float32) / np.float32(np.sqrt(base.shape[1]))
    emb = base[np.arange(n) % len(base)] + np.float32(0.5) * noise
    emb[: len(base)] = base[: min(n, len(base))]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return np.ascontiguousarray(emb)


def ours(x: np.ndarray, k: int):
    s, i = topk_similarity(torch.from_numpy(x), k=k, exclude_self=True, normalize=False)
    return s.numpy(), i.numpy()


def faiss_knn(x: np.ndarray, k: int):
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    s, i = index.search(x, k + 1)
    n = x.shape[0]
    # drop the row itself (it can sit anywhere among exact ties of score 1)
    keep = i != np.arange(n)[:, None]
    first_k = np.cumsum(keep, axis=1) <= k
    sel = keep & first_k
    return s[sel].reshape(n, k), i[sel].reshape(n, k)


def compare(a, b, k: int) -> tuple[int, int]:
    """(rows whose neighbour sets differ beyond ties, rows with score lists off by > 1e-5)."""
    (sa, ia), (sb, ib) = a, b
    bad_scores = int((np.abs(sa - sb) > 1e-5).any(axis=1).sum())
    diff = 0
    for r in np.nonzero((np.sort(ia, 1) != np.sort(ib, 1)).any(axis=1))[0]:
        # only neighbours strictly above the k-th score must be identical
        kth = min(sa[r, -1], sb[r, -1])
        sure_a = set(ia[r][sa[r] > kth + 1e-6].tolist())
        sure_b = set(ib[r][sb[r] > kth + 1e-6].tolist())
        if sure_a != sure_b:
            diff += 1
    return diff, bad_scores


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import faiss

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    x = pool(args.n)
    ours(x[:512], args.k), faiss_knn(x[:512], args.k)  # warm-up: first-call costs stay out of the timings
    load0 = os.getloadavg()[0]
    t_ours, t_faiss, ratios, res = [], [], [], {}
    for rep in range(args.reps):
        got = {}
        for who in (("ours", "faiss") if rep % 2 == 0 else ("faiss", "ours")):
            t0 = time.perf_counter()
            res[who] = (ours if who == "ours" else faiss_knn)(x, args.k)
            got[who] = time.perf_counter() - t0
        t_ours.append(got["ours"])
        t_faiss.append(got["faiss"])
        ratios.append(got["ours"] / got["faiss"])
        print(f"rep {rep}: s1kernels {got['ours']:.2f} s, FAISS {got['faiss']:.2f} s, ratio {ratios[-1]:.2f}, "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
    diff, bad = compare(res["ours"], res["faiss"], args.k)
    lines = [
        f"# Exact self-kNN on a CPU: s1kernels vs FAISS IndexFlatIP (N={args.n:,}, D={x.shape[1]}, k={args.k})",
        "",
        f"Command: `python bench/knn_faiss_cpu.py --n {args.n} --k {args.k} --threads {args.threads} --reps {args.reps}`",
        f"Machine: {machine()}; torch {torch.__version__}, faiss {faiss.__version__}, "
        f"{args.threads} threads each; shared machine, load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end (repetitions interleaved, ratio per repetition).",
        "",
        "| s1kernels s (median) | FAISS s (median) | time ratio s1kernels/FAISS (median) | ratios per rep | "
        "rows with different neighbours (beyond ties) | rows with scores off > 1e-5 |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {statistics.median(t_ours):.2f} | {statistics.median(t_faiss):.2f} | {statistics.median(ratios):.2f} | "
        f"{', '.join(f'{r:.2f}' for r in ratios)} | {diff} of {args.n:,} | {bad} |",
    ]
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
