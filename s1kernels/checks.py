"""The argument-check vocabulary: every public function and CLI names a bad argument the same way.

API checks raise TypeError (wrong kind of value) or ValueError (right kind, out of range),
with a message that names the argument, says what was expected and what came:

    check_int("k", k, lo=1)                  # k: expected an integer >= 1, got 0
    check_float("lr", lr, lo=0, lo_open=True, hi=1e3)

The ops check tensors with one line each (messages as the ops have always written them):

    check_tensor("hidden", hidden, "[N, H]")          # hidden: expected a torch.Tensor [N, H], got list
    check_dims("hidden", hidden, 2, "[N, H]")         # hidden: expected 2 dimensions [N, H], got shape (3,)
    check_dtype("labels", labels, (torch.int64, torch.int32), "dtype int64 or int32")
    check_on_device("weight", weight, hidden.device, "the device of hidden")
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    check_int_type("ignore_index", ignore_index)      # ignore_index: expected an int, got float
    check_positive_int("k", k)                        # k: expected a positive int, got 0

Any other argument error takes the same words through one helper, so no module writes them
by hand (tests/test_checks.py walks the package and holds this):

    raise argument_error("budgets", "positive token counts", list(budgets))
    raise argument_error("text", "str", type(text).__name__, TypeError)

Command lines use the same rules as argparse types (`arg_int`, `arg_float`), a parser whose
errors are one line with exit status 2 (`Parser`), and checks of output paths made before
any long work (`writable_file`, `writable_dir`), so a run never ends by failing to save.
"""
from __future__ import annotations

import argparse
import json
import math
import numbers
import os
import sys
import uuid


def is_int(value) -> bool:
    """A Python int that is not a bool (bool is an int subclass, but True is no count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A Python int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_real(value) -> bool:
    """Any real number (numbers.Real: NumPy scalars included) that is not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def argument_error(name: str, expected: str, got=None, exc: type = ValueError) -> Exception:
    """The exception for a bad argument, worded as every check here words it:
    ``name: expected <expected>, got <got>`` (no ", got" part when `got` is None).

    Returned, not raised, so the caller writes `raise checks.argument_error(...)`: the raise
    stays visible where the check is, and `from None` still applies. `exc` is TypeError for a
    value of the wrong kind, ValueError (the default) for the right kind out of range."""
    return exc(f"{name}: expected {expected}" + ("" if got is None else f", got {got}"))


def check_int(name: str, value, lo: int | None = None, hi: int | None = None) -> int:
    """`value` as an int in [lo, hi]; TypeError for a non-integer (bool and 2.5 included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name}: expected an integer {_range(lo, hi)}, got {value}")
    return value


def check_float(name: str, value, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False) -> float:
    """`value` as a finite float in the given range; TypeError for a non-number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    value = float(value)
    ok = math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        raise ValueError(f"{name}: expected a finite number {_range(lo, hi, lo_open, hi_open)}, got {value!r}")
    return value


def _range(lo, hi, lo_open=False, hi_open=False) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return ""


# ---- tensors and op arguments (the ops' messages) -------------------------------------------

def check_tensor(name: str, t, what: str = ""):
    import torch  # here, so that the command lines' checks load without torch

    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor{' ' + what if what else ''}, got {type(t).__name__}")
    return t


def check_dims(name: str, t, n: int, what: str = "") -> None:
    if t.dim() != n:
        raise ValueError(f"{name}: expected {n} dimensions{' ' + what if what else ''}, got shape {tuple(t.shape)}")


def check_dtype(name: str, t, allowed, what: str | None = None) -> None:
    """`allowed`: a dtype or a tuple of them; `what` replaces "dtype <allowed>" in the message."""
    allowed = allowed if isinstance(allowed, tuple) else (allowed,)
    if t.dtype not in allowed:
        raise TypeError(f"{name}: expected {what or 'dtype ' + ' or '.join(map(str, allowed))}, got {t.dtype}")


def check_on_device(name: str, t, expected, why: str = "") -> None:
    if t.device != expected:
        raise ValueError(f"{name}: expected device {expected}{f' ({why})' if why else ''}, got {t.device}")


def check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")


def check_int_type(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    return value


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


# ---- command lines -------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (`prog: error: ...`) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message.splitlines()[0] if message else message}\n")


def arg_int(lo: int | None = None, hi: int | None = None):
    """argparse type: an integer in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected an integer {_range(lo, hi)}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def arg_float(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False):
    """argparse type: a finite number in the given range."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        try:
            return check_float("value", value, lo, hi, lo_open=lo_open, hi_open=hi_open)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a finite number {_range(lo, hi, lo_open, hi_open)}, "
                                             f"got {text}") from None
    parse.__name__ = "number"
    return parse


def probe_dir(folder: str, flag: str) -> None:
    probe = os.path.join(folder, f".s1k-write-probe-{uuid.uuid4().hex[:8]}")
    try:
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"{flag}: cannot write into {folder!r} ({e.strerror})") from None


def writable_file(path: str, flag: str, suffixes: tuple[str, ...] = ()) -> str:
    """Checks, before any work, that a file can be written at `path`: not a folder, its folder
    exists (or can be made) and is writable, and it ends with one of `suffixes` when given."""
    if os.path.isdir(path):
        raise ValueError(f"{flag}: {path!r} is a folder; expected a file path"
                         + (f" ending in {' or '.join(suffixes)}" if suffixes else ""))
    if suffixes and not path.lower().endswith(tuple(s.lower() for s in suffixes)):
        raise ValueError(f"{flag}: expected a file name ending in {' or '.join(suffixes)}, got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"{flag}: {existing!r} is a file, so {path!r} cannot be created")
    probe_dir(existing, flag)
    return path


def writable_dir(path: str, flag: str) -> str:
    """Checks, before any work, that `path` is (or can become) a writable folder."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag}: {path!r} exists and is not a folder")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(os.path.abspath(existing))
    if not os.path.isdir(existing):
        raise ValueError(f"{flag}: {existing!r} is a file, so {path!r} cannot be created")
    probe_dir(existing, flag)
    return path


def check_device(spec: str | None, flag: str = "--device") -> str | None:
    """A device the machine has: 'cuda' without a CUDA device is a named error, not an assert
    deep inside torch."""
    if spec is None:
        return None
    import torch

    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{flag}: expected a device such as cpu or cuda, got {spec!r} ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{flag}: {spec!r} asked for, but torch sees no CUDA device here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{flag}: {spec!r} asked for, but there are {torch.cuda.device_count()} CUDA devices")
    elif dev.type != "cpu":
        raise ValueError(f"{flag}: expected cpu or cuda[:N], got {spec!r}")
    return spec


MAX_JSON_INT_DIGITS = 4000  # below Python's own int() limit (4,300), which raises a bare ValueError


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses to inf: no file means that
        raise ValueError(f"the number {text[:40]} is beyond a float's range")
    return value


def _json_int(text: str) -> int:
    if len(text) > MAX_JSON_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits (at most {MAX_JSON_INT_DIGITS})")
    return int(text)


def _json_constant(name: str):
    raise ValueError(f"{name} is not JSON (NaN and Infinity are JavaScript, not JSON)")


def loads_json(text: str | bytes):
    """``json.loads`` for files: strict JSON numbers only. NaN, Infinity and numbers that
    overflow a float (1e999) raise ValueError instead of becoming nan / inf values, and
    integers of more than MAX_JSON_INT_DIGITS digits raise ValueError before ``int()``."""
    return json.loads(text, parse_float=_json_float, parse_int=_json_int, parse_constant=_json_constant)


def path_inside(folder: str, name, what: str, allow_symlinks: bool = False) -> str:
    """The path of `name`, a file name read from a file in `folder`, when it stays inside
    `folder`; ValueError naming `what` otherwise.

    Refused: a non-string or empty name, an absolute path, a ``..`` component, and (unless
    `allow_symlinks`) a symbolic link anywhere from `folder` down to the file, so nothing a
    folder's files say can make a loader read outside it. With `allow_symlinks` links may
    point anywhere (a Hugging Face cache snapshot is links into its blob store)."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"{what}: expected a file name inside {folder!r}, got {name!r}")
    parts = name.replace("\\", "/").split("/")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise ValueError(f"{what}: expected a file name inside {folder!r}, got {name!r} (absolute or with '..')")
    path = os.path.join(folder, *[p for p in parts if p not in ("", ".")])
    if not allow_symlinks:
        cur = folder
        for part in parts:
            cur = os.path.join(cur, part)
            if os.path.islink(cur):
                raise ValueError(f"{what}: {cur!r} is a symbolic link (to {os.readlink(cur)!r}); links are "
                                 f"followed only when allowed (allow_symlinks=True, or S1K_ALLOW_SYMLINKS=1)")
        root = os.path.realpath(folder)
        if os.path.commonpath([root, os.path.realpath(path)]) != root:
            raise ValueError(f"{what}: {name!r} resolves outside {folder!r}")
    return path


def symlinks_allowed() -> bool:
    """The command-line switch for `path_inside`'s `allow_symlinks`: S1K_ALLOW_SYMLINKS=1."""
    return os.environ.get("S1K_ALLOW_SYMLINKS", "") == "1"


def read_json(path: str, what: str, *, expect_object: bool = False):
    """JSON of `path` (strict numbers, see `loads_json`); ValueError naming `what` and the
    file when it is not valid JSON (or, with `expect_object`, when it does not hold a JSON
    object)."""
    try:
        with open(path, "rb") as f:
            value = loads_json(f.read())
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError included
        raise ValueError(f"{what}: {path!r} is not valid JSON ({type(e).__name__}: {e})") from None
    if expect_object and not isinstance(value, dict):
        raise ValueError(f"{what}: {path!r} must hold a JSON object, got {type(value).__name__}")
    return value


def fail(prog: str, message: str) -> int:
    """Prints `prog: error: message` as one line on stderr; returns 2 (the exit status)."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2
