"""Backend discovery and dispatch: `resolve`, the GPU arch check, `info`."""
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
    assert backend.resolve("auto", torch.device("cpu"), ("triton", "torch"), "op") == "torch"


def test_resolve_rejects_unknown_and_unimplemented_backends():
    with pytest.raises(ValueError, match="backend must be one of"):
        backend.resolve("cuDNN", torch.device("cpu"), ("torch",), "op")
    with pytest.raises(ValueError, match="not implemented"):
        backend.resolve("cpp", torch.device("cpu"), ("triton", "torch"), "op")


def test_resolve_rejects_an_unusable_explicit_choice():
    with pytest.raises(ValueError, match="not usable for tensors on cpu"):
        backend.resolve("cuda", torch.device("cpu"), ("cuda", "torch"), "op")


def test_info_reports_every_backend_with_a_reason():
    report = backend.info()
    assert set(report["backends"]) == {"cuda", "triton", "cpp", "torch"}
    assert report["backends"]["torch"]["usable"]
    assert all(b["why"] for b in report["backends"].values())
