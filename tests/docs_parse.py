"""Checks a documented command line without running it: its flags must parse.

    python tests/docs_parse.py -m s1kernels.eval --model M --budgets 16 32   # module CLI
    python tests/docs_parse.py bench/run_all.py --only loss                   # script CLI
    python tests/docs_parse.py pip install -e ".[test]"                        # extras must exist
    python tests/docs_parse.py -m pytest tests -n 2                            # paths must exist
    python tests/docs_parse.py -c "print(1)"                                  # compiles
    python tests/docs_parse.py -m s1kernels.ops.triton_compile                # module exists (no flags)
    python tests/docs_parse.py --batch FILE                                   # every command recorded in FILE

For a CLI, the module runs as `python -m` would run it until its argument parser has
parsed the flags, then stops (exit 0): a flag that does not exist, a bad value or a
missing required flag exits 2 with argparse's message. tests/test_docs.py uses it for the
documented commands that need what a test cannot have (a GPU, a download, minutes of CPU).
"""
import argparse
import os
import runpy
import sys
import tomllib


class _Parsed(BaseException):
    """Raised once the flags parsed (a BaseException: CLIs catch Exception to name errors)."""


def _check_pip(args: list[str]) -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        extras = set(tomllib.load(f)["project"].get("optional-dependencies", {}))
    if not args or args[0] not in ("install", "uninstall", "download"):
        print(f"pip: expected install/uninstall/download, got {args[:1]}")
        return 2
    for a in args[1:]:
        if a.startswith((".[", "'.[", '".[')):
            want = a.strip("'\"")[2:-1].split(",")
            missing = [e for e in want if e not in extras]
            if missing:
                print(f"pip: extras {missing} are not in pyproject.toml ({sorted(extras)})")
                return 2
    return 0


def _check_pytest(args: list[str]) -> int:
    paths, skip = [], False
    for a in args:  # the values of -m/-k/-n/-p are not paths
        if not skip and not a.startswith("-"):
            paths.append(a)
        skip = a in ("-m", "-k", "-n", "-p")
    missing = [p for p in paths if not os.path.exists(p.split("::")[0])]
    if missing:
        print(f"pytest: no such test paths {missing}")
        return 2
    return 0


def check(argv: list[str]) -> int:
    """0 when the command's flags parse (or its pip extras / pytest paths exist)."""
    if argv[:1] == ["pip"]:
        return _check_pip(argv[1:])
    if argv[:2] == ["-m", "pytest"]:
        return _check_pytest(argv[2:])
    if argv[:1] == ["-c"]:  # a program on the command line: it must compile (it is not run)
        compile(argv[1], "<-c>", "exec")
        print("compiles: python -c ...")
        return 0
    if argv[:1] == ["setup.py"] or (len(argv) == 1 and argv[0].endswith(".py")):
        # a build, or a script without flags to parse: it must compile (it is not run)
        with open(argv[0], encoding="utf-8") as f:
            compile(f.read(), argv[0], "exec")
        print(f"{argv[0]}: compiles")
        return 0
    if argv[:1] == ["-m"] and len(argv) == 2:  # no flags to parse: the module must exist (not run)
        import importlib.util

        found = importlib.util.find_spec(argv[1]) is not None
        print(f"{argv[1]}: {'found' if found else 'no such module'}")
        return 0 if found else 2
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        real(self, args, namespace)  # exits 2 on a bad flag
        raise _Parsed()

    argparse.ArgumentParser.parse_args = parse_then_stop
    saved_argv, saved_path = sys.argv, list(sys.path)
    try:
        if argv[:1] == ["-m"]:
            sys.argv = [argv[1]] + argv[2:]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = argv
            sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
            runpy.run_path(argv[0], run_name="__main__")
    except _Parsed:
        print("flags parsed:", " ".join(argv))
        return 0
    except SystemExit as e:  # argparse's error exit (its message is on stderr)
        return e.code if isinstance(e.code, int) and e.code else 2
    finally:
        argparse.ArgumentParser.parse_args = real
        sys.argv, sys.path[:] = saved_argv, saved_path
    print(f"{' '.join(argv[:2])}: finished without parsing any flags")
    return 3


def main(argv: list[str]) -> int:
    """`--batch FILE`: every command recorded in FILE (fields separated by \\x1f, commands
    by \\x1e, as tests/test_docs.py's shell functions write them); else one command."""
    if argv[:1] != ["--batch"]:
        return check(argv)
    with open(argv[1], encoding="utf-8") as f:
        records = [r.split("\x1f")[:-1] for r in f.read().split("\x1e") if r.strip("\n")]
    failed = [r for r in records if check(r) != 0]
    for r in failed:
        print("FAILED:", " ".join(r))
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
