"""Fingerprint of the sources the extension s1kernels._C is built from.

setup.py embeds it in the module (`_C.source_digest`); `backend.native()` uses it to accept
an installed build for a source checkout only when both come from the same sources. Kept
free of torch so setup.py can load it by path.
"""
from __future__ import annotations

import glob
import hashlib
import os

PATTERNS = ("python/*.cpp", "csrc/*.cpp", "csrc/*.cu", "csrc/include/s1k/*.h")


def source_digest(root: str) -> str | None:
    """sha256 over the native sources under `root` (the repository); None when it has none."""
    files = sorted(f for pattern in PATTERNS for f in glob.glob(os.path.join(root, pattern)))
    if not files:
        return None
    h = hashlib.sha256()
    for path in files:
        h.update(os.path.relpath(path, root).replace(os.sep, "/").encode())
        with open(path, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()
