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

__all__ = [
    "extract_boxed",
    "extract_answer",
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


def _braced(text: str, open_idx: int) -> tuple[str, int] | None:
    """Content of the brace group opening at ``text[open_idx] == '{'`` and the index past it."""
    depth = 0
    for i in range(open_idx, len(text)):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[open_idx + 1 : i], i + 1
    return None  # unbalanced: the output was cut off inside the box


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (or ``\\boxed 5``) in ``text``."""
    best: tuple[int, str] | None = None
    for cmd in _BOX_COMMANDS:
        start = 0
        while True:
            i = text.find(cmd, start)
            if i < 0:
                break
            start = i + len(cmd)
            j = start
            while j < len(text) and text[j] == " ":
                j += 1
            if j < len(text) and text[j] == "{":
                got = _braced(text, j)
                if got is None:
                    continue
                content = got[0]
            elif j > start:  # "\boxed 5": the argument runs to the next space or '$'
                m = re.match(r"[^\s$]+", text[j:])
                if m is None:
                    continue
                content = m.group(0)
            else:
                continue  # e.g. "\boxedfoo": not the command
            if best is None or i > best[0]:
                best = (i, content)
    return None if best is None else best[1]


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
    # "Final Answer:", which is the same answer).
    for m in reversed(list(re.finditer(r"(?:Final )?Answer:", text))):
        rest = text[m.end() :]
        rest = re.sub(r"<\|[^|>]*\|>", "\n", rest)  # ChatML specials end the answer
        lines = [ln.strip() for ln in rest.split("\n")]
        lines = [ln for ln in lines if ln]
        if lines:
            return lines[0]
    return None


def _strip_text_commands(s: str) -> str:
    """Replace ``\\text{X}``, ``\\textbf{X}``, ``\\mbox{X}``, ``\\mathrm{X}`` by X."""
    for cmd in ("\\text", "\\textbf", "\\textit", "\\mbox", "\\mathrm", "\\mathbf"):
        while True:
            i = s.find(cmd + "{")
            if i < 0:
                break
            got = _braced(s, i + len(cmd))
            if got is None:
                break
            s = s[:i] + got[0] + s[got[1] :]
    return s


def _fix_short_args(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\sqrt3`` -> ``\\sqrt{3}``, ``\\frac{1}2`` -> ``\\frac{1}{2}``."""
    s = re.sub(r"\\sqrt\s*([0-9a-zA-Z])", r"\\sqrt{\1}", s)
    out = []
    i = 0
    while i < len(s):
        if s.startswith("\\frac", i):
            out.append("\\frac")
            i += len("\\frac")
            for _ in range(2):
                while i < len(s) and s[i] == " ":
                    i += 1
                if i < len(s) and s[i] == "{":
                    got = _braced(s, i)
                    if got is None:
                        out.append(s[i:])
                        return "".join(out)
                    out.append("{" + _fix_short_args(got[0]) + "}")
                    i = got[1]
                elif i < len(s) and s[i] != "\\":
                    out.append("{" + s[i] + "}")
                    i += 1
            continue
        out.append(s[i])
        i += 1
    return "".join(out)


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
    while s.endswith(".") or s.endswith(","):
        s = s[:-1].rstrip()
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


def parse_number(answer: str | None) -> Fraction | None:
    """The answer as an exact rational when it is an int, decimal or simple fraction."""
    s = normalize_answer(answer)
    if not s:
        return None
    try:
        if re.fullmatch(r"[-+]?\d+(\.\d*)?([eE][-+]?\d+)?", s):
            return Fraction(s)
        m = re.fullmatch(r"([-+]?)(\d+)/(\d+)", s) or re.fullmatch(r"([-+]?)(-?\d+)/(-?\d+)", s)
        if m:
            den = int(m.group(3))
            if den == 0:
                return None
            value = Fraction(int(m.group(2)), den)
            return -value if m.group(1) == "-" else value
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _split_top_level(s: str) -> list[str]:
    """Split on commas that are not inside brackets/braces; strips outer () / []."""
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        inner = s[1:-1]
    else:
        inner = s
    parts, depth, cur = [], 0, []
    for c in inner:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return parts


def _scalar_match(a: str, b: str) -> bool:
    if a == b:
        return True
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


def _math_verify(pred: str, gold: str) -> bool | None:
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
    pa, pb = _split_top_level(a), _split_top_level(b)
    if len(pa) == len(pb) and len(pa) > 1:
        bracketed_a = a[:1] in "([" and a[-1:] in ")]"
        bracketed_b = b[:1] in "([" and b[-1:] in ")]"
        if bracketed_a or bracketed_b:
            # Tuples and intervals: same brackets (open/closed ends matter), same order.
            if a[0] == b[0] and a[-1] == b[-1] and all(_scalar_match(x, y) for x, y in zip(pa, pb)):
                return True
        else:
            # A bare list of solutions ("1, -2") is a set: any order.
            unmatched = list(pb)
            for x in pa:
                hit = next((i for i, y in enumerate(unmatched) if _scalar_match(x, y)), None)
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
    value = parse_number(ans)
    if value is not None:  # a number: an integer answer only when it is whole (7.5 is no answer)
        return int(value) if value.denominator == 1 else None
    found = re.findall(r"-?\d+", normalize_answer(ans))
    return int(found[-1]) if found else None


_CHOICE_PATTERNS = (
    # strongest signals first; each takes the last match in the text
    r"\\boxed\s*\{\s*\(?([A-Z])\)?\s*\}",
    r"(?:Final )?Answer\s*:\s*\(?\$?\s*([A-Z])\b\)?",
    r"answer is\s*:?\s*\(?([A-Z])\b\)?",
)


def extract_choice(text: str | None, letters: str = "ABCD") -> str | None:
    """The option letter a model output picks (GPQA-style multiple choice), or None.

    Looks, in order, for the last ``\\boxed{B}`` (``\\boxed{(B)}``), the last ``Answer: B`` /
    ``Final Answer: (B)``, the last ``the answer is B``; a letter outside ``letters`` is no
    answer. Lower-case letters are not read ("a" is a word)."""
    if text is None:
        return None
    if not letters or not letters.isalpha() or not letters.isupper():
        raise ValueError(f"letters: expected upper-case option letters such as 'ABCD', got {letters!r}")
    for pattern in _CHOICE_PATTERNS:
        found = re.findall(pattern, text)
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
    raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
