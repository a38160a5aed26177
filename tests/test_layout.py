"""The package's import direction: __main__ (CLI) -> stage API -> ops -> kernels.

Read from the source with `ast` (nothing is imported): only `__main__.py` files import
s1kernels/cli.py, no library module imports a command-line module, and no library module
carries an `if __name__ == "__main__":` entry point. Each stage is a package with its API in
__init__.py and its command in __main__.py.
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "s1kernels"
STAGES = ("select", "train", "generate", "eval")
# Command-line modules besides the __main__.py files: the shared flags and two small commands.
CLI_MODULES = {"s1kernels.cli", "s1kernels.info", "s1kernels.convert"}


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_cli(name: str) -> bool:
    return name in CLI_MODULES or name.endswith(".__main__")


def imported_modules(tree: ast.AST, name: str, is_package: bool) -> set[str]:
    """Every module an import statement (anywhere in the file, functions included) may load:
    for `from a import b` both `a` and `a.b` (b may be a submodule)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names)
    return found


def has_main_guard(tree: ast.AST) -> bool:
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            names = [n for n in ast.walk(node.test) if isinstance(n, ast.Name) and n.id == "__name__"]
            consts = [n for n in ast.walk(node.test) if isinstance(n, ast.Constant) and n.value == "__main__"]
            if names and consts:
                return True
    return False


def violations(root: pathlib.Path) -> list[str]:
    """The rule broken by each file under root/s1kernels, one line each."""
    found = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        name = module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        rel = path.relative_to(root).as_posix()
        imports = imported_modules(tree, name, path.name == "__init__.py")
        if path.name != "__main__.py" and name != "s1kernels.cli" and "s1kernels.cli" in imports:
            found.append(f"{rel}: imports s1kernels.cli, which only __main__.py files may import")
        if not is_cli(name):
            for mod in sorted(m for m in imports if m.startswith(PACKAGE + ".") and is_cli(m)):
                found.append(f"{rel}: library module imports the command-line module {mod}")
            if has_main_guard(tree):
                found.append(f"{rel}: library module has an `if __name__ == \"__main__\"` entry point")
    return found


def test_the_package_keeps_the_import_direction():
    assert violations(ROOT) == []


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_is_a_package_with_api_and_command(stage):
    folder = ROOT / PACKAGE / stage
    assert (folder / "__init__.py").is_file() and (folder / "__main__.py").is_file()
    assert not (ROOT / PACKAGE / f"{stage}.py").exists()


def test_the_evaluation_alias_only_runs_the_suite_command():
    files = sorted(p.name for p in (ROOT / PACKAGE / "evaluation").glob("*.py"))
    assert files == ["__init__.py", "__main__.py"]
    main = (ROOT / PACKAGE / "evaluation" / "__main__.py").read_text()
    assert "s1kernels.eval.__main__" in main and "suite_main" in main


def _write(root: pathlib.Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_rule_sees_each_kind_of_violation(tmp_path):
    """The checker itself: a tree with one violation of each kind is caught, line by line."""
    _write(tmp_path, "s1kernels/__init__.py", "")
    _write(tmp_path, "s1kernels/cli.py", "import argparse\n")
    _write(tmp_path, "s1kernels/stage/__init__.py", "def api():\n    from s1kernels.cli import flags\n")
    _write(tmp_path, "s1kernels/stage/__main__.py", "from s1kernels import cli\nfrom s1kernels.stage import api\n")
    _write(tmp_path, "s1kernels/other/__init__.py", "")
    _write(tmp_path, "s1kernels/other/lib.py", "from ..stage import __main__\n")
    _write(tmp_path, "s1kernels/other/tool.py", "import sys\nif __name__ == '__main__':\n    sys.exit(0)\n")
    _write(tmp_path, "s1kernels/other/fine.py", "from s1kernels.stage import api\nimport s1kernels.clinic\n")
    got = violations(tmp_path)
    assert got == [
        "s1kernels/other/lib.py: library module imports the command-line module s1kernels.stage.__main__",
        "s1kernels/other/tool.py: library module has an `if __name__ == \"__main__\"` entry point",
        "s1kernels/stage/__init__.py: imports s1kernels.cli, which only __main__.py files may import",
        "s1kernels/stage/__init__.py: library module imports the command-line module s1kernels.cli",
    ], got
