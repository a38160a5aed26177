"""Backend discovery and dispatch: `resolve`, the GPU arch check, `info`, finding the extension."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from s1kernels import backend


@pytest.mark.parametrize("cap,archs,ok", [
    ((9, 0), "90a", True), ((10, 0), "90a", False), ((8, 0), "90a", False),
    ((8, 6), "80", True), ((8, 0), "86", False), ((9, 0), "80,90a", True), ((9, 0), "", False),
])
def test_arch_supported(cap, archs, ok):
    assert backend.arch_supported(cap, archs) is ok


def test_resolve_auto_on_cpu_never_picks_the_interpreter():
    for family in backend.FAMILIES:
        assert backend.resolve(family, "auto", torch.device("cpu"), "op") in ("cpp", "torch")
    assert backend.resolve("loss", "auto", torch.zeros(1)) == "torch"


def test_resolve_rejects_unknown_and_unimplemented_backends():
    with pytest.raises(ValueError, match="backend must be one of"):
        backend.resolve("loss", "cuDNN", torch.device("cpu"), "op")
    with pytest.raises(ValueError, match="not implemented"):
        backend.resolve("loss", "cpp", torch.device("cpu"), "op")
    with pytest.raises(ValueError, match="family"):
        backend.resolve("attention", "auto", torch.device("cpu"))


def test_resolve_rejects_an_unusable_explicit_choice():
    with pytest.raises(ValueError, match="not usable for tensors on cpu"):
        backend.resolve("decode", "cuda", torch.device("cpu"), "op")


def test_info_reports_every_backend_with_a_reason():
    report = backend.info()
    assert set(report["backends"]) == {"cuda", "triton", "cpp", "torch"}
    assert report["backends"]["torch"]["usable"]
    assert all(b["why"] for b in report["backends"].values())



def _checkout_and_install(tmp_path):
    """A source checkout without a compiled module, and an installed s1kernels (site folder
    with a dist-info RECORD) that holds a build of the same sources."""
    import shutil

    built = backend.native()
    if built is None:
        pytest.skip("the extension is not built")
    repo = Path(backend.__file__).parents[1]
    checkout = tmp_path / "checkout"
    shutil.copytree(repo / "s1kernels", checkout / "s1kernels", ignore=shutil.ignore_patterns("_C.*", "__pycache__"))
    shutil.copytree(repo / "csrc", checkout / "csrc")
    shutil.copytree(repo / "python", checkout / "python")  # the bindings are part of the fingerprint
    site = tmp_path / "site"
    (site / "s1kernels").mkdir(parents=True)
    so = Path(built.__file__).name
    shutil.copy(built.__file__, site / "s1kernels" / so)
    info = site / "s1kernels-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: s1kernels\nVersion: 0.1.0\n")
    (info / "RECORD").write_text(f"s1kernels/{so},,\ns1kernels-0.1.0.dist-info/METADATA,,\n")
    return checkout, site


def _native_seen_from(checkout, site):
    # The test environment's own editable install of s1kernels must not answer for the checkout.
    code = ("import sys; sys.path.insert(1, sys.argv[1]); "
            "sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, '__module__', '').startswith('__editable__')]; "
            "from s1kernels import backend; m = backend.native(); "
            "print(m.__file__ if m else 'none'); print(backend._native_error())")
    out = subprocess.run([sys.executable, "-c", code, str(site)], cwd=checkout, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=""), timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_a_checkout_without_its_build_uses_the_installed_one_from_the_same_sources(tmp_path):
    checkout, site = _checkout_and_install(tmp_path)
    module, error = _native_seen_from(checkout, site)
    assert module.startswith(str(site)) and error == ""


def test_an_installed_build_from_other_sources_is_refused(tmp_path):
    checkout, site = _checkout_and_install(tmp_path)
    with open(checkout / "csrc" / "decode_cpu.cpp", "a") as f:
        f.write("// an edit after the install\n")
    module, error = _native_seen_from(checkout, site)
    assert module == "none" and "built from other sources than this checkout" in error
