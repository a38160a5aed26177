"""Chat templates rendered as transformers renders them (jinja2, sandboxed), with bounds.

A template comes from a model folder and is code: the sandbox keeps it from reaching
Python objects, and these bounds keep it from hanging or filling memory:

- time: a trace hook on the template's own frames checks the clock every few hundred lines,
  so nested loops that would run for hours stop after `RENDER_SECONDS`;
- size: output is collected piece by piece and stops past `MAX_OUTPUT_CHARS`; `*` and `**`
  are checked before they build a huge string, list or number.

Every failure is a ValueError naming where the template came from.
"""
from __future__ import annotations

import json
import sys
import time

RENDER_SECONDS = 10.0
MAX_OUTPUT_CHARS = 64 << 20
_CHECK_EVERY = 256  # template lines between clock reads
_TEMPLATE_FILE = "<chat template>"


class _Stop(Exception):
    pass


def _environment():
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**"])

        def call_binop(self, context, operator, left, right):
            if operator == "**" and isinstance(left, (int, float)) and isinstance(right, (int, float)):
                if abs(right) > 1024 and abs(left) > 1:
                    raise _Stop(f"{left!r} ** {right!r} is too large")
            if operator == "*":
                seq, n = (left, right) if isinstance(right, int) else (right, left)
                if isinstance(n, int) and hasattr(seq, "__len__") and len(seq) * n > MAX_OUTPUT_CHARS:
                    raise _Stop(f"a repetition of {len(seq) * n} items is beyond {MAX_OUTPUT_CHARS}")
            return super().call_binop(context, operator, left, right)

    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    # Same settings as transformers' chat template rendering.
    env = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


_ENV = None
_CACHE: dict[str, object] = {}


def compile_template(template: str, source: str):
    global _ENV
    compiled = _CACHE.get(template)
    if compiled is None:
        from jinja2.exceptions import TemplateError

        if _ENV is None:
            _ENV = _environment()
        try:
            code = _ENV.compile(template, filename=_TEMPLATE_FILE)
            compiled = _ENV.template_class.from_code(_ENV, code, _ENV.make_globals(None))
        except (TemplateError, RecursionError, MemoryError) as e:
            raise ValueError(f"chat template: {source} does not compile ({type(e).__name__}: {e})") from None
        _CACHE[template] = compiled
    return compiled


def render(template: str, source: str, **variables) -> str:
    """`template` rendered with `variables`; ValueError naming `source` when it fails or
    exceeds the time or size bound."""
    from jinja2.exceptions import TemplateError

    compiled = compile_template(template, source)
    deadline = time.monotonic() + RENDER_SECONDS
    lines = 0

    def local(frame, event, arg):
        nonlocal lines
        lines += 1
        if lines % _CHECK_EVERY == 0 and time.monotonic() > deadline:
            raise _Stop(f"rendering took longer than {RENDER_SECONDS:g} s")
        return local

    def hook(frame, event, arg):
        return local if frame.f_code.co_filename == _TEMPLATE_FILE else None

    previous = sys.gettrace()
    sys.settrace(hook)
    try:
        parts, size = [], 0
        for piece in compiled.generate(**variables):
            size += len(piece)
            if size > MAX_OUTPUT_CHARS:
                raise _Stop(f"the output passed {MAX_OUTPUT_CHARS} characters")
            parts.append(piece)
        return "".join(parts)
    except _Stop as e:
        raise ValueError(f"chat template: {source}: {e}; the template is not usable as a chat template") from None
    except (TemplateError, RecursionError, MemoryError, TypeError, AttributeError, KeyError) as e:
        raise ValueError(f"chat template: {source} failed to render ({type(e).__name__}: {e})") from None
    finally:
        sys.settrace(previous)
