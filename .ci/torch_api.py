"""Version drift: every torch API the code calls must exist in torch 2.11 (the GPU machine's).

CI runs torch 2.13; the lent GPU machine has 2.11. This lists every `torch.<...>` name that
s1kernels/, bench/ and tests/ use (through `import torch`, `import torch.x as y`, `from torch.x
import y`) and checks each against the sources of the torch 2.11.0 wheel, which it reads as a
zip file (it never installs or imports that torch):

    python -m pip download --no-deps --only-binary=:all: torch==2.11.0 -d DIR    # ~530 MB
    python .ci/torch_api.py --wheel DIR/torch-2.11.0-*.whl [--list FILE]

A name counts as present in 2.11 when the module that holds it in the installed torch has,
in the 2.11 wheel, a source or stub file (for `torch` itself also the _C stubs and
functional.py), or the module that defines it in the installed torch (a re-export), in which
the name appears as a word; an op torch.ops.<ns>.<op> counts when `<ns>.<op>` appears in any
Python file of that wheel (ops are registered in C++; torch's own Python calling one shows it
exists); torch.ops.s1kernels (this package's ops) is left out. Tensor
methods and keyword arguments
are not seen by this check (it reads names, not types).
"""
from __future__ import annotations

import argparse
import ast
import importlib
import os
import re
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ("s1kernels", "bench", "tests")
TORCH_EXTRA = ("torch/_C/__init__.pyi", "torch/_C/_VariableFunctions.pyi", "torch/functional.py",
               "torch/_tensor.py", "torch/__init__.pyi", "torch/_C/_nn.pyi")


def _chain(node) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id] + parts[::-1]
    return None


def used_names(paths) -> dict[str, set[str]]:
    """{'torch.a.b': {files}} for every torch name the files reach through an alias."""
    found: dict[str, set[str]] = {}
    for path in paths:
        tree = ast.parse(open(path).read(), path)
        alias = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == "torch" or a.name.startswith("torch."):
                        alias[a.asname or a.name.split(".")[0]] = a.name if a.asname else "torch"
                        if not a.asname:
                            found.setdefault(a.name, set()).add(path)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and (
                    node.module == "torch" or node.module.startswith("torch.")):
                for a in node.names:
                    if a.name != "*":
                        alias[a.asname or a.name] = f"{node.module}.{a.name}"
                        found.setdefault(f"{node.module}.{a.name}", set()).add(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and not isinstance(getattr(node, "_parent_attr", None), ast.Attribute):
                chain = _chain(node)
                if chain and chain[0] in alias:
                    found.setdefault(".".join([alias[chain[0]]] + chain[1:]), set()).add(path)
            for child in ast.iter_child_nodes(node):
                child._parent_attr = node
    # keep the longest chains only: torch.cuda.Event implies torch.cuda
    return {n: f for n, f in found.items() if not any(o.startswith(n + ".") for o in found)}


def split_module(name: str) -> tuple[str, str | None]:
    """('torch.a', 'b') for torch.a.b.c where torch.a is the deepest importable module."""
    parts = name.split(".")
    module, rest = parts[0], parts[1:]
    importlib.import_module(module)
    while rest:
        candidate = f"{module}.{rest[0]}"
        try:
            importlib.import_module(candidate)
        except ImportError:
            break
        module, rest = candidate, rest[1:]
    return module, (rest[0] if rest else None)


def present_in_wheel(names, wheel: str) -> dict[str, bool]:
    z = zipfile.ZipFile(wheel)
    files = set(z.namelist())
    cache = {}

    def text(module: str) -> str:
        if module not in cache:
            base = module.replace(".", "/")
            cands = [base + ".py", base + ".pyi", base + "/__init__.py", base + "/__init__.pyi"]
            if module == "torch":
                cands += list(TORCH_EXTRA)
            cache[module] = "\n".join(z.read(c).decode("utf-8", "replace") for c in cands if c in files)
        return cache[module]

    def has(module: str, attr: str) -> bool:
        src = text(module)
        return bool(src) and re.search(rf"\b{re.escape(attr)}\b", src) is not None

    every_py = []

    def op_used(name: str) -> bool:
        # torch.ops.<ns>.<op> is registered in C++; the wheel's own Python calling it (meta
        # registrations, inductor) shows that the op exists in that version
        if not every_py:
            every_py.append("\n".join(z.read(f).decode("utf-8", "replace") for f in files
                                       if f.startswith("torch/") and f.endswith((".py", ".pyi"))))
        ns_op = name[len("torch.ops."):]
        return re.search(rf"\b{re.escape(ns_op)}\b", every_py[0]) is not None

    out = {}
    for name in names:
        if name.startswith("torch.ops.") and name.count(".") >= 3:
            out[name] = op_used(name)
            continue
        module, attr = split_module(name)
        if attr is None:
            out[name] = bool(text(module))
            continue
        # a re-export (torch.nn.Linear from torch.nn.modules.linear): look where it is defined
        home = getattr(getattr(importlib.import_module(module), attr, None), "__module__", None)
        out[name] = has(module, attr) or (isinstance(home, str) and home.startswith("torch") and has(home, attr))
    return out


def scanned_files():
    for top in SCANNED:
        for dirpath, _, names in os.walk(os.path.join(ROOT, top)):
            for n in names:
                if n.endswith(".py"):
                    yield os.path.join(dirpath, n)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", required=True, help="the torch 2.11.0 wheel (any Python tag) to check against")
    ap.add_argument("--list", help="also write every torch name used, with the files using it, to this file")
    args = ap.parse_args(argv)
    used = {n: f for n, f in used_names(sorted(scanned_files())).items()
            if not n.startswith("torch.ops.s1kernels")}  # this package's own custom ops
    rel = {n: sorted(os.path.relpath(f, ROOT) for f in fs) for n, fs in used.items()}
    present = present_in_wheel(sorted(used), args.wheel)
    newer = sorted(n for n, ok in present.items() if not ok)
    if args.list:
        with open(args.list, "w") as f:
            f.write("".join(f"{n}\t{'2.11' if present[n] else 'NOT IN 2.11'}\t{' '.join(rel[n])}\n"
                            for n in sorted(used)))
    print(f"{len(used)} torch names used by {', '.join(SCANNED)}; {len(used) - len(newer)} present in "
          f"{os.path.basename(args.wheel)}")
    for n in newer:
        print(f"  not in torch 2.11: {n}  used in {', '.join(rel[n])}")
    if newer:
        print("Each torch name must exist in torch 2.11, the GPU machine's version: use an older spelling.")
    return 1 if newer else 0


if __name__ == "__main__":
    sys.exit(main())
