"""Final-answer extraction and checking: math (MATH500), integer (AIME) and multiple choice (GPQA).

A model's output is reduced to one answer string: the content of the last ``\\boxed{...}``
(nested braces handled), else the text after the last ``Final Answer:``, else after the last
``Answer:``. Answers are compared after a light LaTeX normalisation (``$``, ``\\text{}``,
``\\left``/``\\right``, ``\\dfrac``, spaces, degree signs, a trailing period, thousands
separators, a leading ``x =``), then as numbers (integers, decimals and simple fractions are
compared exactly as rationals), element-wise for comma-separated tuples, and finally with
the ``math_verify`` package when it is installed (optional: it catches symbolic
equivalences such as ``\\frac{\\sqrt3}{3}`` vs ``\\frac{1}{\\sqrt3}``).

AIME answers are integers 0-999: ``extract_integer`` keeps the integer of the extracted
answer (``\\boxed{033}`` -> 33). Multiple-choice answers (GPQA) are a letter:
``extract_choice`` reads it from ``\\boxed{B}``, ``Answer: (B)``, ``the answer is B``.
``score(kind, output_text, gold)`` picks the extraction and comparison for a benchmark kind.
"""
from __future__ import annotations

import re
from fractions import Fraction
from s1kernels import checks

import numpy as np

__all__ = [
    "extract_boxed",
    "extract_answer",
    "first_answer_end",
    "normalize_answer",
    "parse_number",
    "answers_match",
    "check_answer",
    "extract_integer",
    "extract_choice",
    "score",
    "KINDS",
]

_BOX_COMMANDS = ("\\boxed", "\\fbox")


_BOX = re.compile(r"\\(?:boxed|fbox) *+")
_BOX_ARG = re.compile(r"[^\s$]++")


class _BracePairs:
    """The matching ``}`` of every balanced ``{`` of a string, found without a Python loop.

    Untrusted text can hold a hundred thousand braces (unbalanced ``\\boxed{`` from an
    output cut off mid-box, ``\\frac{`` nested thousands deep): a depth count from each
    ``{`` is quadratic, and even a one-pass stack in Python costs tens of milliseconds.
    Here: the depth after each character is a cumulative sum, and the ``{`` at ``p`` (depth
    ``d`` after it) closes at the first ``}`` past ``p`` whose depth after it is ``d - 1``
    (depth moves by one, so it cannot drop below ``d`` without passing there): one sort of
    the ``}`` by (depth, position) and one binary search for all ``{`` at once."""

    def __init__(self, text: str, codes=None):
        n = len(text)
        codes = _codes(text) if codes is None else codes
        is_open, is_close = codes == 123, codes == 125
        depth = np.cumsum(is_open.astype(np.int64) - is_close)
        opens, closes = np.flatnonzero(is_open), np.flatnonzero(is_close)
        self._close = np.full(n, -1, dtype=np.int64)  # per position: its closing "}" or -1
        if len(opens) and len(closes):
            stride = n + 1  # key = (depth + n + 1) * stride + position: depth in [-n, n]
            keys = np.sort((depth[closes] + stride) * stride + closes)
            want = depth[opens] - 1 + stride
            found = np.searchsorted(keys, want * stride + opens)
            at = np.minimum(found, len(keys) - 1)
            hit = (found < len(keys)) & (keys[at] // stride == want)
            self._close[opens[hit]] = keys[at][hit] % stride

    def get(self, i: int) -> int | None:
        """Index of the ``}`` closing the ``{`` at ``i``; None when it is unbalanced."""
        c = int(self._close[i])
        return None if c < 0 else c


def _codes(s: str):
    """``s`` as an array of code points, for the string edits below that run in numpy."""
    return np.frombuffer(s.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _edited(codes, delete, wrap) -> str:
    """The string of ``codes`` without the positions in the mask ``delete`` and with the
    characters at ``wrap`` (never deleted) put in braces."""
    keep = ~delete
    kept = codes[keep]
    if len(wrap):
        before = np.concatenate(([0], np.cumsum(keep)))  # position -> index among kept
        # "}" entries first: np.insert keeps the given order among equal indices, and the
        # "}" after one wrapped character comes before the "{" of the next.
        at = np.concatenate((before[wrap + 1], before[wrap]))
        values = np.concatenate((np.full(len(wrap), ord("}")), np.full(len(wrap), ord("{"))))
        kept = np.insert(kept, at, values.astype(np.uint32))
    return kept.astype(np.uint32).tobytes().decode("utf-32-le", "surrogatepass")


def _usable_boxes(text: str, matches):
    """(content start, content end, end) of each box command in `matches` that has an argument,
    in their order: a braced one up to its matching brace, or "\\boxed 5" up to the next space
    or '$'. An unbalanced box and "\\boxedfoo" (not the command) are skipped."""
    pairs = None
    for m in matches:
        j = m.end()
        if j < len(text) and text[j] == "{":
            if pairs is None:
                pairs = _BracePairs(text)
            close = pairs.get(j)
            if close is not None:
                yield j + 1, close, close + 1
        elif j > m.start() + len(m.group(0).rstrip(" ")):
            arg = _BOX_ARG.match(text, j)
            if arg is not None:
                yield j, arg.end(), arg.end()


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (or ``\\boxed 5``) in ``text``."""
    for start, stop, _ in _usable_boxes(text, reversed(list(_BOX.finditer(text)))):
        return text[start:stop]
    return None


def extract_answer(text: str) -> str | None:
    """The final answer in a model output, or None when there is none.

    Priority: the last ``\\boxed{}``; else what follows the last ``Final Answer:`` or
    ``Answer:`` that has text after it (first line only; ChatML special tokens end it).
    """
    if text is None:
        return None
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed.strip()
    # The last marker with something after it ("Answer:" also matches inside
    # "Final Answer:", which is the same answer). Only a marker's first non-empty line is
    # read, so each marker costs the length of the text up to its answer.
    for m in reversed(list(_ANSWER_MARKER.finditer(text))):
        line = _first_line(text, m.end())
        if line:
            return line
    return None


_ANSWER_MARKER = re.compile(r"(?:Final )?Answer:")
_LINE_END = re.compile(r"\n|<\|[^|>]*+\|>")  # ChatML special tokens end a line too


def _first_line(text: str, pos: int) -> str:
    """The first non-empty stripped line of ``text[pos:]`` (lines end at newlines and ChatML
    special tokens), or ''."""
    while pos <= len(text):
        end = _LINE_END.search(text, pos)
        stop = len(text) if end is None else end.start()
        line = text[pos:stop].strip()
        if line or end is None:
            return line
        pos = end.end()
    return ""


_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|textit|mbox|mathrm|mathbf)\{")


def _first_boxed_close(text: str) -> int | None:
    """Index just past the first closed ``\\boxed{...}`` / ``\\fbox{...}`` (or ``\\boxed 5``)."""
    for _, _, end in _usable_boxes(text, _BOX.finditer(text)):
        return end
    return None


_NON_SPACE = re.compile(r"\S")


def first_answer_end(text: str) -> int | None:
    """Where the first complete answer of an answer span ends (a character index), or None.

    The answer is complete at the end of the line (the next newline or ChatML special
    token, else the end of the text) that holds the first closed ``\\boxed{}``, or, when
    the text has none, the first ``Final Answer:``/``Answer:`` followed by some text (on
    its line or a later one) -- the priority ``extract_answer`` reads answers with. Whatever
    a model writes after that line is not part of its answer: budget forcing counts it as
    thinking (``s1kernels.control.read_row``). Linear in the text's length."""
    if not isinstance(text, str):
        raise checks.argument_error("text", "str", type(text).__name__, TypeError)
    at = _first_boxed_close(text)
    if at is None:
        for m in _ANSWER_MARKER.finditer(text):
            content = _NON_SPACE.search(text, m.end())
            if content is not None:
                at = content.start()
                break
    if at is None:
        return None
    end = _LINE_END.search(text, at)
    return len(text) if end is None else end.start()


def _strip_text_commands(s: str) -> str:
    """Replace ``\\text{X}``, ``\\textbf{X}``, ``\\mbox{X}``, ``\\mathrm{X}`` by X (nested too).

    Each command with its opening brace and the matching closing brace is cut, all at once;
    an unbalanced command is left as it is."""
    spans = np.array([m.span() for m in _TEXT_COMMAND.finditer(s)], dtype=np.int64).reshape(-1, 2)
    if not len(spans):
        return s
    codes = _codes(s)
    close = _BracePairs(s, codes)._close[spans[:, 1] - 1]
    ok = close >= 0
    if not ok.any():
        return s
    inside = np.zeros(len(s) + 1, dtype=np.int64)
    inside[spans[ok, 0]] += 1  # match spans never overlap: the indices are distinct
    inside[spans[ok, 1]] -= 1
    delete = np.cumsum(inside)[:-1] > 0
    delete[close[ok]] = True
    return _edited(codes, delete, np.zeros(0, dtype=np.int64))


_SQRT_SHORT = re.compile(r"\\sqrt\s*+([0-9a-zA-Z])")
_FRAC = re.compile(r"\\frac")
_NO_ARGUMENT = (ord("\\"), ord("}"), 0)  # a command, the end of the enclosing group, the end


def _fix_short_args(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\sqrt3`` -> ``\\sqrt{3}``, ``\\frac{1}2`` -> ``\\frac{1}{2}``.

    Each ``\\frac`` takes two arguments: spaces before one are dropped, a one-character
    argument is braced, a ``{`` argument runs to its matching ``}`` (whose content is fixed
    the same way). All ``\\frac`` are handled at once, in numpy, with the brace pairs
    found once: no recursion (``\\frac{`` nested thousands deep is fine) and no Python loop
    over them. An argument opening with an unbalanced ``{`` leaves the rest of the string
    as it is."""
    s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    if "\\frac" not in s:
        return s
    n = len(s)
    codes = _codes(s)
    padded = np.append(codes, np.uint32(0))  # position n reads as 0: the end
    closes = np.append(_BracePairs(s, codes)._close, -1)
    nonspace = np.flatnonzero(codes != ord(" "))

    def next_nonspace(i):
        k = np.searchsorted(nonspace, i)
        return np.where(k < len(nonspace), nonspace[np.minimum(k, len(nonspace) - 1)], n) if len(nonspace) else np.full_like(i, n)

    def argument(start):
        at = next_nonspace(start)
        c = padded[at]
        brace = c == ord("{")
        single = ~np.isin(c, _NO_ARGUMENT) & ~brace
        close = np.where(brace, closes[at], -1)
        return at, single, brace & (close >= 0), brace & (close < 0), close

    frac_end = np.array([m.end() for m in _FRAC.finditer(s)], dtype=np.int64)
    a1, single1, group1, open1, close1 = argument(frac_end)
    has2 = single1 | group1  # after "\\frac\\x" or an unbalanced first argument: no second
    start2 = np.where(single1, a1 + 1, np.where(group1, close1 + 1, a1))
    a2, single2, _, open2, _ = argument(start2)
    single2 &= has2
    open2 &= has2
    cutoff = int(np.concatenate(([n], a1[open1], a2[open2])).min())  # the first unbalanced "{"

    # Spaces before the arguments: [frac_end, a1) always, [start2, a2) when there is a second.
    bounds = np.zeros(n + 1, dtype=np.int64)
    np.add.at(bounds, frac_end, 1)
    np.add.at(bounds, a1, -1)
    np.add.at(bounds, start2[has2], 1)
    np.add.at(bounds, a2[has2], -1)
    delete = np.cumsum(bounds)[:-1] > 0
    delete[cutoff:] = False
    wrap = np.concatenate((a1[single1], a2[single2]))
    wrap = np.sort(wrap[wrap < cutoff])
    return _edited(codes, delete, wrap)


_TRAILING_PUNCTUATION = re.compile(r"[\s.,]*+")


def normalize_answer(answer: str | None) -> str:
    """A canonical string form of an answer for comparison (light LaTeX clean-up)."""
    if answer is None:
        return ""
    s = str(answer).strip()
    s = s.replace("\n", " ")
    s = s.replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\:", "")
    s = s.replace("\\ ", " ")
    s = s.replace("$", "")
    s = _strip_text_commands(s)
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("\\displaystyle", "")
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}", "", s)
    s = re.sub(r"\^\s*\\circ", "", s)
    s = s.replace("°", "")
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace("\\$", "")
    # Light unit removal: trailing words such as "degrees", "cm", "units" after a number.
    s = re.sub(
        r"(?<=[0-9}])\s*(degrees?|units?|cm|centimeters?|meters?|inches|feet|dollars?|cents?|"
        r"minutes?|hours?|seconds?|days?|square\s+\w+|sq\s+\w+)\s*$",
        "",
        s,
    )
    s = s.strip()
    # Trailing periods and commas (with spaces between them) go: matched on the reversed
    # string, anchored, so a run of 100k commas is one linear scan.
    s = s[: len(s) - _TRAILING_PUNCTUATION.match(s[::-1]).end()]
    # "x = 5" -> "5" when the left side is one short symbol (MATH convention).
    m = re.match(r"^\s*[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*(?!=)(.+)$", s)
    if m and "=" not in m.group(1):
        s = m.group(1)
    s = _fix_short_args(s)
    s = s.replace(" ", "")
    # Thousands separators: "10,080" -> "10080" (only groups of exactly three digits).
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    if s.startswith("."):
        s = "0" + s
    s = s.replace("-.", "-0.")
    # "\frac{a}{b}" with plain integer parts and "a/b" become one form.
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", s)
    if m:
        s = f"{m.group(1)}{m.group(2)}/{m.group(3)}"
    return s


# Numbers past these sizes are compared as strings only: no benchmark answer is near them,
# and exact arithmetic on them is unbounded (``1e10000000`` is a 10-million-digit integer;
# ``int()`` refuses strings of more than 4,300 digits).
MAX_NUMBER_DIGITS = 1000
MAX_NUMBER_EXPONENT = 1000

_DECIMAL = re.compile(r"[-+]?(\d++)(?:\.(\d*+))?(?:[eE]([-+]?\d++))?")
_RATIO = re.compile(r"([-+]?)(-?\d++)/(-?\d++)")


def _digits_ok(*parts: str | None) -> bool:
    return sum(len(p) for p in parts if p) <= MAX_NUMBER_DIGITS


def parse_number(answer: str | None) -> Fraction | None:
    """The answer as an exact rational when it is an int, decimal or simple fraction (None
    for anything else, and for numbers beyond ``MAX_NUMBER_DIGITS`` digits or a
    ``MAX_NUMBER_EXPONENT`` exponent, which are compared as strings)."""
    return _number(normalize_answer(answer))


def _number(s: str) -> Fraction | None:
    """``parse_number`` of an already normalised answer."""
    if not s:
        return None
    m = _DECIMAL.fullmatch(s)
    if m:
        whole, frac, exp = m.groups()
        if not _digits_ok(whole, frac) or (exp is not None and (len(exp) > 6 or abs(int(exp)) > MAX_NUMBER_EXPONENT)):
            return None
        try:
            return Fraction(s)
        except ValueError:  # a form the regex allows and Fraction does not
            return None
    m = _RATIO.fullmatch(s)
    if m:
        if not _digits_ok(m.group(2), m.group(3)):
            return None
        den = int(m.group(3))
        if den == 0:
            return None
        value = Fraction(int(m.group(2)), den)
        return -value if m.group(1) == "-" else value
    return None


_OPENERS = tuple(map(ord, "([{"))
_CLOSERS = tuple(map(ord, ")]}"))


def _split_top_level(s: str, parts: int | None = None) -> list[str] | None:
    """Split on commas that are not inside brackets/braces; strips outer () / [].
    With ``parts``: None unless there are exactly that many (nothing is sliced then)."""
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        inner = s[1:-1]
    else:
        inner = s
    if "," not in inner:
        found = np.zeros(0, dtype=np.int64)
    else:
        codes = _codes(inner)
        depth = np.cumsum(np.isin(codes, _OPENERS).astype(np.int64) - np.isin(codes, _CLOSERS))
        found = np.flatnonzero((codes == ord(",")) & (depth == 0))
    if parts is not None and len(found) + 1 != parts:
        return None
    edges = [-1, *found.tolist(), len(inner)]
    return [inner[a + 1 : b] for a, b in zip(edges, edges[1:])]


def _scalar_match(a: str, b: str, normalized: bool = True) -> bool:
    if a == b:
        return True
    if normalized:  # whole answers come normalised; tuple parts are normalised here
        na, nb = _number(a), _number(b)
    else:
        na, nb = parse_number(a), parse_number(b)
    if na is not None and nb is not None:
        if na == nb:
            return True
        if "." not in a and "." not in b:
            return False  # integers and fractions compare exactly
        # Long decimals written with rounding: accept a relative difference below 1e-6.
        scale = max(abs(na), abs(nb), Fraction(1))
        return abs(na - nb) <= Fraction(1, 10**6) * scale
    return False


# math_verify parses with sympy, whose time grows faster than the input: longer answers
# (no benchmark has one) are not handed to it.
MATH_VERIFY_MAX_CHARS = 1000


def _math_verify(pred: str, gold: str) -> bool | None:
    if len(pred) > MATH_VERIFY_MAX_CHARS or len(gold) > MATH_VERIFY_MAX_CHARS:
        return None
    try:
        import math_verify  # optional dependency
    except ImportError:
        return None
    try:
        gold_parsed = math_verify.parse("$" + gold + "$")
        pred_parsed = math_verify.parse("$" + pred + "$")
        return bool(math_verify.verify(gold_parsed, pred_parsed))
    except Exception:  # math_verify raises on malformed LaTeX; that is a non-match
        return None


def answers_match(pred: str | None, gold: str | None, use_math_verify: bool = True) -> bool:
    """True when the predicted answer equals the gold answer (normalised, numeric, tuple-wise)."""
    if pred is None or gold is None:
        return False
    a, b = normalize_answer(pred), normalize_answer(gold)
    if not a or not b:
        return False
    if _scalar_match(a, b):
        return True
    pb = _split_top_level(b)
    pa = _split_top_level(a, parts=len(pb)) if len(pb) > 1 else None
    if pa is not None:
        bracketed_a = a[:1] in "([" and a[-1:] in ")]"
        bracketed_b = b[:1] in "([" and b[-1:] in ")]"
        if bracketed_a or bracketed_b:
            # Tuples and intervals: same brackets (open/closed ends matter), same order.
            if a[0] == b[0] and a[-1] == b[-1] and all(_scalar_match(x, y, False) for x, y in zip(pa, pb)):
                return True
        else:
            # A bare list of solutions ("1, -2") is a set: any order.
            unmatched = list(pb)
            for x in pa:
                hit = next((i for i, y in enumerate(unmatched) if _scalar_match(x, y, False)), None)
                if hit is None:
                    break
                unmatched.pop(hit)
            if not unmatched:
                return True
    if use_math_verify:
        verdict = _math_verify(str(pred), str(gold))
        if verdict:
            return True
    return False


def check_answer(output_text: str, gold: str, use_math_verify: bool = True) -> tuple[str | None, bool]:
    """Extract the final answer from a model output and check it: ``(answer, correct)``."""
    pred = extract_answer(output_text)
    return pred, answers_match(pred, gold, use_math_verify=use_math_verify)


def extract_integer(text: str | None) -> int | None:
    """The integer answer of a model output (AIME): the extracted final answer (see
    ``extract_answer``) when it is an integer after normalisation (``033``, ``\\boxed{33}``,
    ``1,000``, ``33.0``); None when it is a number that is not whole (``7.5``); else the
    last integer in it (``12 apples``); None when there is none."""
    ans = extract_answer(text) if text is not None else None
    if ans is None:
        return None
    norm = normalize_answer(ans)
    value = _number(norm)
    if value is not None:  # a number: an integer answer only when it is whole (7.5 is no answer)
        return int(value) if value.denominator == 1 else None
    if _DECIMAL.fullmatch(norm) or _RATIO.fullmatch(norm):
        return None  # a number too large to be an answer ("1e10000000" is not 10000000)
    found = _INTEGER.findall(norm)
    if not found or not _digits_ok(found[-1]):
        return None  # no integer, or one too long to be an answer
    return int(found[-1])


_INTEGER = re.compile(r"-?\d++")


_CHOICE_PATTERNS = tuple(re.compile(p) for p in (
    # Strongest signals first; each takes the last match in the text. Possessive `*+` / `?+`:
    # two optional runs of spaces in a row ("Answer:" + 10k spaces) would otherwise be tried
    # in every split, quadratic in the run's length.
    r"\\boxed\s*+\{\s*+\(?+([A-Z])\)?+\s*+\}",
    r"(?:Final )?Answer\s*+:\s*+\(?+\$?+\s*+([A-Z])\b\)?",
    r"answer is\s*+:?+\s*+\(?+([A-Z])\b\)?",
))


def extract_choice(text: str | None, letters: str = "ABCD") -> str | None:
    """The option letter a model output picks (GPQA-style multiple choice), or None.

    Looks, in order, for the last ``\\boxed{B}`` (``\\boxed{(B)}``), the last ``Answer: B`` /
    ``Final Answer: (B)``, the last ``the answer is B``; a letter outside ``letters`` is no
    answer. Lower-case letters are not read ("a" is a word)."""
    if text is None:
        return None
    if not letters or not letters.isalpha() or not letters.isupper():
        raise checks.argument_error("letters", "upper-case option letters such as 'ABCD'", repr(letters))
    for pattern in _CHOICE_PATTERNS:
        found = pattern.findall(text)
        if found:
            return found[-1] if found[-1] in letters else None
    return None


KINDS = ("math", "aime", "gpqa")


def score(kind: str, output_text: str | None, gold: str, use_math_verify: bool = True) -> tuple[str | None, bool]:
    """``(extracted answer, correct)`` of a model output for a benchmark ``kind``:
    "math" (``check_answer``), "aime" (integers compared exactly) or "gpqa" (option letters)."""
    if kind == "math":
        if output_text is None:
            return None, False
        return check_answer(output_text, gold, use_math_verify=use_math_verify)
    if kind == "aime":
        got = extract_integer(output_text)
        want = parse_number(str(gold))
        ok = got is not None and want is not None and want.denominator == 1 and got == int(want)
        return (None if got is None else str(got)), ok
    if kind == "gpqa":
        got = extract_choice(output_text)
        return got, got is not None and got == str(gold).strip().upper()
    raise checks.argument_error("kind", f"one of {', '.join(KINDS)}", repr(kind))
