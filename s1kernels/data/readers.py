"""Reading s1-format rows from JSONL, JSON-array and Parquet files.

Every row is normalised to `{"question": str, "thinking": list[str], "answer": str}` from
s1K's column names or simple aliases (first one present wins):

    question  <- question | problem | prompt | instruction
    thinking  <- thinking_trajectories | thinking | solution    (a list of strings or one string)
    answer    <- attempt | answer                               (numbers become strings)

A malformed row raises ValueError naming the file, the line (JSONL) or row (Parquet) and
the field; with `skip_bad=True` it is skipped and counted in the stats instead, and the
first messages are kept there. Nothing is dropped silently.
"""
from __future__ import annotations

import json
import os
from typing import Iterator

from s1kernels import checks, extras
from s1kernels.checks import loads_json

# The only lists of field aliases in s1kernels, in one order (first present wins): train,
# eval, generate's prompt files and select all read rows through them.
QUESTION_KEYS = ("question", "problem", "prompt", "instruction")
THINKING_KEYS = ("thinking_trajectories", "thinking", "solution")
ANSWER_KEYS = ("attempt", "answer")
FIELDS = ("question", "thinking", "answer")
_MAX_KEPT_ERRORS = 20
# One row's size bound. The longest s1K row is about 0.1 MB; a multi-megabyte line is a broken
# export, and tokenizing and packing it costs gigabytes only to be truncated to one block.
MAX_ROW_BYTES = 8 << 20


class RowError(ValueError):
    """A malformed row; the message names the file, line/row and field."""


def _first(raw: dict, keys: tuple[str, ...], name: str, require: tuple[str, ...], where: str):
    """(key, value) of the first present alias of field `name`; (None, None) when absent,
    which is an error when the field is required."""
    for k in keys:
        if k in raw and raw[k] is not None:
            return k, raw[k]
    if name in require:
        raise RowError(f"{where}: field '{name}' missing (looked for {', '.join(keys)})")
    return None, None


def field(raw: dict, keys: tuple[str, ...]):
    """The value of the first alias in `keys` that `raw` holds (not None); None when absent."""
    return next((raw[k] for k in keys if raw.get(k) is not None), None)


def question_of(raw) -> str | None:
    """The question text of a raw row: the first question alias holding a string, else None."""
    if not isinstance(raw, dict):
        return None
    return next((raw[k] for k in QUESTION_KEYS if isinstance(raw.get(k), str)), None)


def normalize_row(raw, where: str, require: tuple[str, ...] = FIELDS) -> dict:
    """Normalise one raw row (see the module docstring); `where` prefixes error messages."""
    if not isinstance(raw, dict):
        raise checks.argument_error(where, "a JSON object", type(raw).__name__, RowError)
    out: dict = {}
    key, q = _first(raw, QUESTION_KEYS, "question", require, where)
    if key is None:
        q = None
    elif not isinstance(q, str) or not q.strip():
        raise checks.argument_error(f"{where}: field '{key}'", "a non-empty string", _describe(q), RowError)
    out["question"] = q

    key, t = _first(raw, THINKING_KEYS, "thinking", require, where)
    if key is None:
        t = []
    elif isinstance(t, str):
        t = [t]
    elif isinstance(t, (list, tuple)) and all(isinstance(x, str) for x in t):
        t = list(t)
    else:
        raise checks.argument_error(f"{where}: field '{key}'", "a string or a list of strings", _describe(t),
                                    RowError)
    out["thinking"] = t

    key, a = _first(raw, ANSWER_KEYS, "answer", require, where)
    if key is not None:
        if not (isinstance(a, str) or checks.is_number(a)):
            raise checks.argument_error(f"{where}: field '{key}'", "a string or a number", _describe(a), RowError)
        a = str(a)
    out["answer"] = a
    _check_text(out, raw, where)
    return out


def _check_text(out: dict, raw: dict, where: str) -> None:
    """Every string encodes as UTF-8 (JSON can carry a lone surrogate such as "\\ud800", which
    no tokenizer can encode), and the row is within MAX_ROW_BYTES."""
    size = 0
    for name in FIELDS:
        values = out[name] if isinstance(out[name], list) else [out[name]]
        for v in values:
            if v is None:
                continue
            try:
                size += len(v.encode("utf-8"))
            except UnicodeEncodeError as e:
                raise RowError(f"{where}: field '{name}' holds a lone surrogate {v[e.start]!r} at character "
                                f"{e.start}, which is not text") from None
    if size > MAX_ROW_BYTES:
        raise RowError(f"{where}: the row's text is {size} bytes, more than the {MAX_ROW_BYTES} a row may have")


def _describe(x) -> str:
    if isinstance(x, str):
        return "an empty string" if not x.strip() else f"string {x[:20]!r}"
    if isinstance(x, list):
        bad = next((type(v).__name__ for v in x if not isinstance(v, str)), None)
        return f"a list holding {bad}" if bad else "list"
    return type(x).__name__


def _lines(f) -> Iterator[bytes | int]:
    """Lines of binary file `f`; a line over MAX_ROW_BYTES is skipped unread and its size yielded."""
    while True:
        line = f.readline(MAX_ROW_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_ROW_BYTES and not line.endswith(b"\n"):
            size = len(line)
            while True:  # skip the rest of the line in bounded chunks
                more = f.readline(1 << 20)
                size += len(more)
                if not more or more.endswith(b"\n"):
                    break
            yield size
            continue
        yield line


def _parse(text: str | bytes, where: str):
    # the line's own end is not part of the row: left in, an unterminated string is reported
    # as "Invalid control character" at the newline instead of where the string starts
    text = text.rstrip("\r\n") if isinstance(text, str) else text.rstrip(b"\r\n")
    try:
        return loads_json(text)
    except json.JSONDecodeError as e:
        return RowError(f"{where}: invalid JSON ({_json_error(e)})")
    except ValueError as e:  # NaN, 1e999, a 5,000-digit integer: never a value to train on
        return RowError(f"{where}: invalid JSON ({e})")
    except RecursionError:
        return RowError(f"{where}: invalid JSON (nested too deeply)")


def _jsonl_records(path: str) -> Iterator[tuple[str, object]]:
    with open(path, "rb") as f:
        for lineno, line in enumerate(_lines(f), 1):
            where = f"{path}:line {lineno}"
            if isinstance(line, int):
                yield where, RowError(f"{where}: the line is {line} bytes, more than the {MAX_ROW_BYTES} a row may have")
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield where, RowError(f"{where}: not UTF-8 text (byte {line[e.start]:#04x} at column {e.start + 1})")
                continue
            if not text.strip():
                yield where, _BLANK
                continue
            yield where, _parse(text, where)


def _json_error(e: json.JSONDecodeError) -> str:
    """json's message with its column (characters from 1 on the error's line), worded once:
    "Unterminated string starting at column 14", "Extra data at column 10"."""
    msg = e.msg[: -len(" at")] if e.msg.endswith(" at") else e.msg
    return f"{msg} at column {e.colno}"


def _json_array_records(path: str) -> Iterator[tuple[str, object]]:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        yield f"{path}:line {line}", RowError(f"{path}:line {line}: not UTF-8 text (byte {raw[e.start]:#04x})")
        return
    try:
        data = loads_json(text)
    except json.JSONDecodeError as e:
        yield f"{path}:line {e.lineno}", RowError(f"{path}:line {e.lineno}: invalid JSON ({_json_error(e)})")
        return
    except ValueError as e:
        yield path, RowError(f"{path}: invalid JSON ({e})")
        return
    except RecursionError:
        yield path, RowError(f"{path}: invalid JSON (nested too deeply)")
        return
    if not isinstance(data, list):
        yield path, RowError(f"{path}: expected a JSON array of objects, got {type(data).__name__}")
        return
    for i, rec in enumerate(data):
        yield f"{path}:item {i}", rec


def _is_json_array(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    return head.startswith(b"[")


# A Parquet file decodes to at most this many bytes per byte of file (and at least the floor):
# real data compresses a few times; a crafted file (a 3 KB file that decodes to 3.4 GB)
# stops here, named, instead of filling memory.
PARQUET_EXPANSION = 200
PARQUET_FLOOR_BYTES = 256 << 20


def _parquet_records(path: str) -> Iterator[tuple[str, object]]:
    pq = extras.require("pyarrow.parquet", f"reading the Parquet file {path}")
    budget = max(PARQUET_FLOOR_BYTES, PARQUET_EXPANSION * os.path.getsize(path))
    try:
        f = pq.ParquetFile(path)
        md = f.metadata
        claimed = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
    except Exception as e:  # pyarrow's errors (ArrowInvalid, OSError, ...): not a Parquet file
        raise ValueError(f"path: {path!r} is not a readable Parquet file ({type(e).__name__}: {e})") from None
    if claimed > budget:
        raise ValueError(f"path: {path!r} claims {claimed} bytes of data, more than {budget} "
                         f"({PARQUET_EXPANSION}x its size); refusing to decode it")
    n, decoded = 0, 0
    batches = f.iter_batches(batch_size=256)
    while True:
        try:
            batch = next(batches, None)
        except Exception as e:  # a page cut short or garbage inside an otherwise valid file
            raise ValueError(f"path: {path!r}: row {n + 1} onwards cannot be decoded "
                             f"({type(e).__name__}: {e})") from None
        if batch is None:
            return
        decoded += _plain_bytes(batch)
        if decoded > budget:
            raise ValueError(f"path: {path!r} decodes to more than {budget} bytes ({PARQUET_EXPANSION}x its "
                             f"size) by row {n + batch.num_rows}; refusing to read further")
        for rec in batch.to_pylist():
            n += 1
            yield f"{path}:row {n}", rec


def _plain_bytes(batch) -> int:
    """Bytes of `batch` once dictionary columns are expanded (as to_pylist expands them):
    a dictionary-encoded column is how a tiny file holds a huge decoded table."""
    import pyarrow as pa

    total = 0
    for col in batch.columns:
        total += col.dictionary_decode().nbytes if pa.types.is_dictionary(col.type) else col.nbytes
    return total


_BLANK = object()
BLANK = _BLANK  # what iter_jsonl yields for an empty line


def iter_jsonl(path: str) -> Iterator[tuple[str, object]]:
    """(where, record) per line of a JSONL file: the parsed JSON, BLANK for an empty line, or a
    RowError (not raised) naming file and line for bytes that are not UTF-8, invalid or too
    deeply nested JSON, or a line over MAX_ROW_BYTES."""
    return _jsonl_records(path)


def read_rows(path: str | os.PathLike, skip_bad: bool = False,
              require: tuple[str, ...] = FIELDS) -> tuple[list[dict], dict]:
    """Rows of a JSONL, .json (an array of objects) or .parquet file, normalised, and reading stats.

    require: the fields a row must have (default all three for training; pass
    ("question",) to read prompts for evaluation: missing thinking -> [], answer -> None).
    stats: path, rows (kept), skipped (malformed rows skipped), blank (empty JSONL lines),
    errors (the first messages of skipped rows).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise checks.argument_error("path", "an existing .jsonl or .parquet file", repr(path))
    bad_req = [f for f in require if f not in FIELDS]
    if bad_req:
        raise checks.argument_error("require", f"fields among {FIELDS}", bad_req)
    if path.endswith((".parquet", ".pq")):
        records = _parquet_records(path)
    elif path.endswith(".json") and _is_json_array(path):
        records = _json_array_records(path)
    else:
        records = _jsonl_records(path)
    rows: list[dict] = []
    stats = {"path": path, "rows": 0, "skipped": 0, "blank": 0, "errors": []}
    for where, rec in records:
        if rec is _BLANK:
            stats["blank"] += 1
            continue
        try:
            if isinstance(rec, RowError):
                raise rec
            rows.append(normalize_row(rec, where, require))
        except RowError as e:
            if not skip_bad:
                raise
            stats["skipped"] += 1
            if len(stats["errors"]) < _MAX_KEPT_ERRORS:
                stats["errors"].append(str(e))
    stats["rows"] = len(rows)
    return rows, stats


def write_jsonl(rows: list[dict], path: str | os.PathLike) -> None:
    """Write rows (dicts) as JSON lines."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------
# Benchmarks for evaluation: AIME-style (integer answer), MATH500 (LaTeX answer), GPQA-style
# multiple choice. Field aliases (first present wins; HF dataset cards capitalise some):
BENCH_QUESTION_KEYS = QUESTION_KEYS + ("Question", "Problem", "prompt")
BENCH_ANSWER_KEYS = ("answer", "Answer", "final_answer")
CHOICE_CORRECT_KEYS = ("Correct Answer", "correct_answer")  # GPQA's CSV columns
CHOICE_INCORRECT_KEYS = (("Incorrect Answer 1", "incorrect_answer_1"), ("Incorrect Answer 2", "incorrect_answer_2"),
                         ("Incorrect Answer 3", "incorrect_answer_3"))
CHOICE_LIST_KEYS = ("options", "choices")  # a list of four options ...
CHOICE_INDEX_KEYS = ("correct_index", "label", "answer_index", "answer")  # ... and the correct one (0-3 or A-D)
BENCHMARKS = ("math", "aime", "gpqa")
LETTERS = "ABCD"


def _is_int_answer(a) -> bool:
    if checks.is_int(a):
        return True
    return isinstance(a, str) and a.strip().lstrip("-").isdigit()


def detect_benchmark(records: list[dict]) -> str:
    """"gpqa" when rows carry four options (GPQA's Correct/Incorrect Answer columns, or an
    options/choices list); else "aime" when every answer is an integer; else "math"."""
    if not records:
        raise checks.argument_error("records", "at least one row to detect the benchmark from", "none")
    first = records[0]
    if field(first, CHOICE_CORRECT_KEYS) is not None or isinstance(field(first, CHOICE_LIST_KEYS), list):
        return "gpqa"
    answers = [field(r, BENCH_ANSWER_KEYS) for r in records]
    return "aime" if all(_is_int_answer(a) for a in answers) else "math"


def _choices(raw: dict, where: str) -> tuple[list[str], int]:
    """The four options of a multiple-choice row and the index of the correct one."""
    correct = field(raw, CHOICE_CORRECT_KEYS)
    if correct is not None:
        wrong = [field(raw, keys) for keys in CHOICE_INCORRECT_KEYS]
        if any(w is None for w in wrong):
            raise RowError(f"{where}: a GPQA row needs 'Incorrect Answer 1'..'3' beside 'Correct Answer'")
        return [str(correct).strip()] + [str(w).strip() for w in wrong], 0
    options = field(raw, CHOICE_LIST_KEYS)
    if not isinstance(options, list) or len(options) != len(LETTERS):
        raise checks.argument_error(where, f"{len(LETTERS)} options (an options/choices list or GPQA's columns)",
                                    _describe(options), RowError)
    idx = field(raw, CHOICE_INDEX_KEYS)
    if isinstance(idx, str) and idx.strip().upper() in LETTERS and len(idx.strip()) == 1:
        idx = LETTERS.index(idx.strip().upper())
    elif isinstance(idx, str) and idx.strip() in [str(o).strip() for o in options]:
        idx = [str(o).strip() for o in options].index(idx.strip())
    if not checks.is_int(idx) or not 0 <= idx < len(options):
        raise RowError(f"{where}: the correct option must be an index 0-3, a letter A-D or the option's text, "
                       f"got {idx!r}")
    return [str(o).strip() for o in options], idx


def multiple_choice_prompt(question: str, options: list[str]) -> str:
    """The question followed by its lettered options and how to answer (s1's GPQA layout)."""
    lines = [question.strip(), ""] + [f"{L}) {o}" for L, o in zip(LETTERS, options)]
    return "\n".join(lines + ["", "Answer with the letter of the correct option."])


def benchmark_row(raw: dict, kind: str, where: str, rng) -> dict:
    """One evaluation row ``{"question", "answer", "kind", ...}`` from a raw benchmark row.

    GPQA-style: the options are shuffled with ``rng`` and lettered into the question; the
    answer is the correct option's letter and ``options`` keeps the shuffled order."""
    if not isinstance(raw, dict):
        raise checks.argument_error(where, "an object", type(raw).__name__, RowError)
    q = next((raw[k] for k in BENCH_QUESTION_KEYS if isinstance(raw.get(k), str) and raw[k].strip()), None)
    if q is None:
        raise RowError(f"{where}: field 'question' missing (looked for {', '.join(BENCH_QUESTION_KEYS)})")
    row = {k: v for k, v in raw.items() if isinstance(v, (str, int, float, bool)) or v is None}
    if kind == "gpqa":
        options, correct = _choices(raw, where)
        order = list(range(len(options)))
        rng.shuffle(order)
        shuffled = [options[i] for i in order]
        row.update(question=multiple_choice_prompt(q, shuffled), answer=LETTERS[order.index(correct)],
                   options=shuffled, kind=kind)
        return row
    a = field(raw, BENCH_ANSWER_KEYS)
    if a is None or not (isinstance(a, str) or checks.is_number(a)):
        raise RowError(f"{where}: field 'answer' missing or not a string/number "
                       f"(looked for {', '.join(BENCH_ANSWER_KEYS)})")
    if kind == "aime" and not _is_int_answer(a):
        raise RowError(f"{where}: an AIME-style answer must be an integer, got {a!r}")
    row.update(question=q, answer=str(a).strip(), kind=kind)
    return row


def read_benchmark(path: str | os.PathLike, kind: str | None = None, seed: int = 0,
                   limit: int | None = None) -> tuple[list[dict], str]:
    """Evaluation rows of a JSONL / JSON array / Parquet / CSV benchmark file and its kind.

    ``kind``: "math" (MATH500: ``problem`` + LaTeX ``answer``), "aime" (integer ``answer``),
    "gpqa" (question + four options: GPQA's ``Correct Answer`` / ``Incorrect Answer 1-3``
    columns or an ``options`` list with ``correct_index``); None detects it from the
    columns (`detect_benchmark`). GPQA options are shuffled with ``seed`` (one generator
    over the file, so a row's order depends on the seed and its position)."""
    import random

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise checks.argument_error("path", "an existing benchmark file", repr(path))
    if kind is not None and kind not in BENCHMARKS:
        raise checks.argument_error("kind", f"one of {', '.join(BENCHMARKS)} or None (detect)", repr(kind))
    if path.endswith(".csv"):
        import csv

        with open(path, encoding="utf-8", newline="") as f:
            records = [(f"{path}:row {i}", r) for i, r in enumerate(csv.DictReader(f), 1)]
    elif path.endswith((".parquet", ".pq")):
        records = list(_parquet_records(path))
    elif path.endswith(".json") and _is_json_array(path):
        records = list(_json_array_records(path))
    else:
        records = [(w, r) for w, r in _jsonl_records(path) if r is not _BLANK]
    for where, rec in records:
        if isinstance(rec, RowError):
            raise rec
    if limit is not None:
        records = records[:limit]
    kind = kind or detect_benchmark([r for _, r in records if isinstance(r, dict)] or [{}])
    rng = random.Random(seed)
    return [benchmark_row(r, kind, where, rng) for where, r in records], kind
