"""bench/cpu_report.py: the machine line names the CPU and its ISA flags, and a result file
keeps one section per CPU kind (a run replaces only its own kind's)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))

import cpu_report  # noqa: E402


def test_sections_per_kind_are_replaced_one_at_a_time(tmp_path):
    out = str(tmp_path / "r.md")
    with open(out, "w") as f:
        f.write("# old table\n\n| a |\n")  # a file from before kinds were recorded
    cpu_report.write_report(["# t", "", "| avx512 v1 |"], out, kind="AVX-512")
    cpu_report.write_report(["# t", "", "| avx2 |"], out, kind="AVX2-only")
    text = cpu_report.write_report(["# t", "", "| avx512 v2 |"], out, kind="AVX-512")
    assert text == open(out).read()
    heads = [line for line in text.splitlines() if line.startswith("## CPU kind: ")]
    assert heads == ["## CPU kind: not recorded (measured before kinds were recorded)", "## CPU kind: AVX2-only",
                     "## CPU kind: AVX-512"]
    assert "| old table" not in text and "# old table" in text and "| avx2 |" in text
    assert "avx512 v2" in text and "avx512 v1" not in text


def test_machine_line_names_the_isa_and_the_imitation(monkeypatch):
    model, flags = cpu_report.cpu_info()
    line = cpu_report.machine()
    assert model in line and "ISA flags" in line
    if "avx512f" in flags:
        assert cpu_report.cpu_kind() == "AVX-512"
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
        assert cpu_report.cpu_kind() == "AVX2 imitated on AVX-512"
        assert "ATEN_CPU_CAPABILITY=avx2" in cpu_report.machine()
    elif "avx2" in flags:
        assert cpu_report.cpu_kind() == "AVX2-only"
