"""Selection at pool scale on a CPU: each similarity stage and the whole `select` CLI, timed.

    python bench/select_cpu.py                       # N=100,000, writes bench/results/select-100k-cpu.md
    python bench/select_cpu.py --n 20000 --out -     # smaller pool, table to stdout only

The pool is built from the real s1K questions (../shared/data/s1k_questions.jsonl and its
all-MiniLM-L6-v2 vectors s1k_questions.minilm.npy), deterministically:

- row r is copy c = r // 1000 of source question s = r % 1000 (rows are copy-major, so the
  1,000 originals come first, unchanged, as copy 0);
- copy c >= 1 gets a fresh id (question_hash + "-c") and a distinct question string (the
  source text plus "(variant c)"), so the exact-string filter keeps it;
- its vector is the source vector plus seeded Gaussian noise of norm ~sigma, renormalised:
  a seeded choice of exactly round(near_rate * (N - 1000)) copies gets sigma = 0.15 (cosine
  ~0.99 to its source: a near-duplicate at threshold 0.95), every other copy sigma = 1.0
  (cosine ~0.71 to its source, ~0.5 to a sibling copy: related, not a duplicate).

So dedup at 0.95 in row order is expected to drop every near copy (its source comes first)
plus the pairs s1K itself has above 0.95. Each stage runs in a fresh process; the peak RSS
is that process's ru_maxrss (os.wait4), which includes the interpreter, torch and the pool.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "shared", "data")
SRC_JSONL = os.path.join(DATA, "s1k_questions.jsonl")
SRC_NPY = os.path.join(DATA, "s1k_questions.minilm.npy")
SIGMA_NEAR, SIGMA_FAR = 0.15, 1.0
CLUSTERS = 50  # SelectConfig.clusters: the k-means k that select uses for domains
PICKS = 1000


def build_pool(n: int, out_dir: str, near_rate: float = 0.05, seed: int = 0) -> tuple[str, str, int]:
    """Writes pool.jsonl and pool.npy (fp32 [n, 384], unit rows) into out_dir.
    Returns (jsonl path, npy path, number of near-duplicate copies)."""
    with open(SRC_JSONL) as f:
        src = [json.loads(line) for line in f if line.strip()]
    base = np.load(SRC_NPY).astype(np.float32)
    n0, d = base.shape
    if len(src) != n0:
        raise ValueError(f"{SRC_NPY} has {n0} rows but {SRC_JSONL} has {len(src)}")
    if n < n0:
        raise ValueError(f"n: expected at least the {n0} source rows, got {n}")
    rng = np.random.default_rng(seed)
    sigma = np.full(n, SIGMA_FAR, dtype=np.float32)
    sigma[:n0] = 0.0
    n_near = round(near_rate * (n - n0))
    sigma[n0 + rng.permutation(n - n0)[:n_near]] = SIGMA_NEAR
    noise = rng.standard_normal((n, d), dtype=np.float32) / np.float32(np.sqrt(d))
    emb = base[np.arange(n) % n0] + sigma[:, None] * noise
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    os.makedirs(out_dir, exist_ok=True)
    jsonl, npy = os.path.join(out_dir, "pool.jsonl"), os.path.join(out_dir, "pool.npy")
    np.save(npy, emb)
    with open(jsonl, "w") as f:
        for r in range(n):
            c, row = divmod(r, n0)
            row = dict(src[row])
            if c:
                row["question_hash"] = f"{row['question_hash']}-{c}"
                row["question"] = f"{row['question']} (variant {c})"
            f.write(json.dumps(row) + "\n")
    return jsonl, npy, n_near


def child(stage: str, pool_dir: str) -> None:
    """Runs one similarity stage in this process and prints its timing as one JSON line."""
    import torch

    from s1kernels.ops import similarity as sim

    x = torch.from_numpy(np.load(os.path.join(pool_dir, "pool.npy")))
    sim.topk_similarity(x[:8], k=1)  # the op's first call imports torch._dynamo (~2 s): not timed
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    if stage == "knn":
        _, idx = sim.topk_similarity(x, k=16)
        note = f"[{idx.shape[0]}, {idx.shape[1]}] neighbours"
    elif stage == "dedup":
        kept = int(sim.threshold_dedup(x, 0.95).keep.sum())
        note = f"kept {kept}, dropped {x.shape[0] - kept}"
    elif stage == "kmeans":
        labels, _ = sim.kmeans(x, CLUSTERS, seed=0)
        note = f"{CLUSTERS} clusters, 20 iterations, largest {int(torch.bincount(labels).max())} rows"
    elif stage == "kcenter":
        picks = sim.k_center(x, PICKS)
        note = f"{picks.numel()} picks"
    elif stage == "mmr":
        with open(os.path.join(pool_dir, "pool.jsonl")) as f:
            lens = np.array([len(json.loads(line)["question"]) for line in f], dtype=np.float32)
        rel = torch.from_numpy(lens / lens.max())  # select's relevance: length / longest
        t0, c0 = time.perf_counter(), time.process_time()
        picks = sim.mmr(x, rel, PICKS, 0.5)
        note = f"{picks.numel()} picks, lambda 0.5"
    else:
        raise ValueError(f"stage: unknown {stage!r}")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"seconds": seconds, "cpu": cpu, "rss_before_mb": rss_before, "note": note}))


def run_measured(cmd: list[str]) -> tuple[float, float, float, str]:
    """(wall seconds, CPU seconds (user + sys), peak RSS MB, stdout) of one command in a
    fresh process."""
    root = os.path.dirname(HERE)
    # the checkout this script sits in is what gets measured, whatever is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=root, env=env)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4 (for its rusage): tell Popen
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited with {p.returncode}:\n{out}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="pool rows (default 100,000)")
    p.add_argument("--near-rate", type=float, default=0.05, help="share of copies made near-duplicates")
    p.add_argument("--pool-dir", default="/tmp/s1k-pool", help="where the pool files go")
    p.add_argument("--stages", default="knn,dedup,kmeans,kcenter,mmr,select,select-kmeans,select-kcenter,select-mmr",
                   help="comma-separated subset to run")
    p.add_argument("--out", default=None, help="markdown file (default bench/results/select-<n/1000>k-cpu.md; "
                                               "'-' prints only)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.pool_dir)
        return 0

    import torch

    pool_dir = os.path.join(args.pool_dir, str(args.n))
    jsonl, npy, n_near = build_pool(args.n, pool_dir, args.near_rate)
    labels = {
        "knn": "topk_similarity self-kNN, k=16",
        "dedup": "threshold_dedup at 0.95 (exact, row order)",
        "kmeans": f"spherical k-means, {CLUSTERS} clusters (select's default)",
        "kcenter": f"k_center, {PICKS} picks",
        "mmr": f"mmr, {PICKS} picks",
        "select": "`select --k 1000` (s1: source_type domains)",
        "select-kmeans": "`select --k 1000 --domain-column ''` (k-means domains)",
        "select-kcenter": "`select --k 1000 --method kcenter`",
        "select-mmr": "`select --k 1000 --method mmr`",
    }
    extra = {"select": [], "select-kmeans": ["--domain-column", ""],
             "select-kcenter": ["--method", "kcenter"], "select-mmr": ["--method", "mmr"]}
    rows = []
    for stage in args.stages.split(","):
        with open("/proc/loadavg") as f:  # other work on the machine shows up here
            load = f.read().split()[0]
        if stage not in labels:
            raise SystemExit(f"stages: unknown stage {stage!r}; expected some of {', '.join(labels)}")
        if stage in extra:
            out_path = os.path.join(pool_dir, f"{stage}.jsonl")
            cmd = [sys.executable, "-m", "s1kernels.select", "--input", jsonl, "--embeddings", npy,
                   "--k", str(PICKS), "--output", out_path, "--device", "cpu"] + extra[stage]
            wall, cpu, rss, out = run_measured(cmd)
            dedup = next((ln for ln in out.splitlines() if ln.startswith("dedup")), "")
            note = "dedup removed " + dedup.split()[3] if dedup else ""
            rows.append((labels[stage], wall, cpu, rss, None, load, note))
        else:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", stage, "--pool-dir", pool_dir]
            _, _, rss, out = run_measured(cmd)
            res = json.loads(out.strip().splitlines()[-1])
            rows.append((labels[stage], res["seconds"], res["cpu"], rss, res["rss_before_mb"], load, res["note"]))
        print(f"{rows[-1][0]}: {rows[-1][1]:.1f} s, peak RSS {rss:.0f} MB  {rows[-1][-1]}", flush=True)

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        f"# Selection on CPU, N={args.n:,} D=384 fp32",
        "",
        f"Machine: {os.cpu_count()}-core {platform.machine()} ({cpu}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}.",
        f"Command: `python bench/select_cpu.py --n {args.n}`. Pool: the 1,000 s1K questions and their "
        f"MiniLM vectors, replicated to {args.n:,} rows with seeded noise ({n_near:,} near-duplicate "
        f"copies, cosine ~0.99 to their source; the rest ~0.71); see the script's docstring.",
        "",
        "Similarity rows call the op on the [N, 384] tensor in a fresh process; select rows run "
        "`python -m s1kernels.select --input pool.jsonl --embeddings pool.npy --k 1000 --output "
        "sel.jsonl --device cpu` with the flags shown.",
        "",
        "Time: wall clock of the stage alone, after loading (select rows: the whole process, "
        "start-up and file reading included); CPU: user + sys seconds over all threads in the same "
        "span. Peak RSS: the process's ru_maxrss; 'before' is the RSS after importing torch and "
        "loading the pool. Load: the 1-minute load average when the stage started; the run's own "
        "previous stage (2 threads) lifts it towards 2, more means other work shared the cores.",
        "",
        "| stage | time (s) | CPU (s) | peak RSS (MB) | RSS before (MB) | load | result |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, secs, cpu_s, rss, before, load, note in rows:
        before = "-" if before is None else f"{before:.0f}"
        lines.append(f"| {label} | {secs:.1f} | {cpu_s:.1f} | {rss:.0f} | {before} | {load} | {note} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or os.path.join(HERE, "results", f"select-{args.n // 1000}k-cpu.md")
    if out != "-":
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            f.write(text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
