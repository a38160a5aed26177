"""Answer checking time against output length on hostile outputs: the growth must be linear.

For each shape that once made the checker quadratic or crash, builds outputs of 12.5k to
100k characters and times `score` for every benchmark kind (CPU time of this process,
best of 5), then prints a markdown table with the ratio of each time to the 12.5k one
(linear growth: x2, x4, x8; quadratic: x4, x16, x64).

    python bench/answers_timing.py --out bench/results/answers-timing-cpu.md
"""
import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from s1kernels.answers import score  # noqa: E402

SHAPES = {
    "Answer: + spaces": lambda n: "Answer:" + " " * n,
    "the answer is + spaces": lambda n: "the answer is" + " " * n,
    "unbalanced \\boxed{": lambda n: "\\boxed{" * (n // 7),
    "nested \\frac{": lambda n: "\\boxed{" + "\\frac{" * (n // 14) + "}" * (n // 14) + "}",
    "unbalanced \\frac{": lambda n: "\\boxed{" + "\\frac{" * (n // 6),
    "nested \\text{": lambda n: "\\boxed{" + "\\text{a" * (n // 8) + "}" * (n // 8) + "}",
    "\\frac12 repeated": lambda n: "\\boxed{" + "\\frac12" * (n // 7) + "}",
    "digits": lambda n: "\\boxed{" + "7" * n + "}",
    "tuple": lambda n: "\\boxed{(" + "1," * (n // 2) + ")}",
    "commas": lambda n: "\\boxed{1" + "," * n + "}",
}
SIZES = (12_500, 25_000, 50_000, 100_000)
GOLDS = (("math", "\\frac{1}{2}"), ("aime", "33"), ("gpqa", "B"))


def cpu_best(text, runs=5):
    best = float("inf")
    for _ in range(runs):
        t0 = time.process_time()
        for kind, gold in GOLDS:
            score(kind, text, gold, use_math_verify=False)
        best = min(best, time.process_time() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the markdown table here as well")
    args = ap.parse_args()
    rows = []
    for name, make in SHAPES.items():
        times = [cpu_best(make(n)) for n in SIZES]
        rows.append((name, times))
        print(name, " ".join(f"{t * 1e3:.2f}" for t in times), flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Answer checking time against output length (hostile outputs)",
        "",
        f"`python bench/answers_timing.py`: CPU time of `score` for all three kinds (math, aime, gpqa)",
        f"together on one output, best of 5, {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}, load average {load:.1f} at the end. Ratios are to the 12.5k time",
        "(linear: x2 x4 x8; quadratic: x4 x16 x64).",
        "",
        "| shape | " + " | ".join(f"{n / 1000:g}k chars (ms)" for n in SIZES) + " | ratios |",
        "|---|" + "---|" * len(SIZES) + "---|",
    ]
    for name, times in rows:
        ratios = " ".join(f"x{t / times[0]:.1f}" for t in times[1:]) if times[0] > 0 else "-"
        lines.append(f"| {name} | " + " | ".join(f"{t * 1e3:.2f}" for t in times) + f" | {ratios} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
