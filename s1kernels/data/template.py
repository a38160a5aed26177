"""Chat templates rendered as transformers renders them (jinja2, sandboxed), in a bounded process.

A template comes from a model folder and is code. The jinja2 sandbox keeps it from reaching
Python objects; what it can still do is spend time and memory, and much of that happens in
single C calls no in-process check can interrupt (`sort` or `wordwrap` on a huge string,
`s ~ s` doubled in a loop, `'%02000000000d' % 1`, string methods such as `center`). So
rendering happens in a separate small Python process (one, reused, started on first use)
whose address space is capped at `RENDER_MEMORY_BYTES` above its start-up size and which
is killed when a render passes `RENDER_SECONDS`. The output is capped at `MAX_OUTPUT_CHARS`,
and `*` / `**` are still refused before they build something huge (a clearer message).

Every failure is a ValueError naming where the template came from; after a kill or a
memory failure the next render starts a fresh process.
"""
from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import threading
import time

RENDER_SECONDS = 10.0
RENDER_MEMORY_BYTES = 1 << 30
MAX_OUTPUT_CHARS = 64 << 20
_TEMPLATE_FILE = "<chat template>"
_STARTUP_SECONDS = 60.0


class _Stop(Exception):
    pass


# ---- the renderer process ---------------------------------------------------------------

def _environment(max_chars: int):
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
                if isinstance(n, int) and hasattr(seq, "__len__") and len(seq) * n > max_chars:
                    raise _Stop(f"a repetition of {len(seq) * n} items is beyond {max_chars}")
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


def _render_here(env, cache: dict, template: str, variables: dict, max_chars: int) -> str:
    """One render inside the renderer process; raises _Stop or the template's own error."""
    from jinja2.exceptions import TemplateError

    compiled = cache.get(template)
    if compiled is None:
        try:
            code = env.compile(template, filename=_TEMPLATE_FILE)
            compiled = env.template_class.from_code(env, code, env.make_globals(None))
        except (TemplateError, RecursionError, MemoryError) as e:
            raise _Stop(f"does not compile ({type(e).__name__}: {e})") from None
        cache[template] = compiled
    parts, size = [], 0
    for piece in compiled.generate(**variables):
        size += len(piece)
        if size > max_chars:
            raise _Stop(f"the output passed {max_chars} characters; the template is not usable as a chat template")
        parts.append(piece)
    return "".join(parts)


def _serve(memory_bytes: int) -> None:
    """The renderer process: one JSON request per stdin line, one JSON reply per line."""
    import resource

    import jinja2.sandbox  # noqa: F401  (loaded before the clock of the first render starts)

    try:
        with open("/proc/self/statm") as f:  # address space now, in pages (Linux)
            start = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = start + memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (OSError, ValueError):
        pass  # no /proc or no settable limit (not Linux): the time limit still holds
    envs: dict[int, object] = {}
    cache: dict[str, object] = {}
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            max_chars = req["max_chars"]
            env = envs.get(max_chars) or envs.setdefault(max_chars, _environment(max_chars))
            reply = {"text": _render_here(env, cache.setdefault(max_chars, {}), req["template"], req["variables"],
                                          max_chars)}
        except _Stop as e:
            reply = {"error": str(e)}
        except MemoryError:
            reply = {"error": f"rendering needed more than {memory_bytes} bytes of memory; "
                              f"the template is not usable as a chat template"}
        except Exception as e:  # the template's own failure (TemplateError, TypeError, ...)
            reply = {"error": f"failed to render ({type(e).__name__}: {e})"}
        try:
            out.write(json.dumps(reply) + "\n")
            out.flush()
        except MemoryError:
            os._exit(3)  # the parent names the failure from the lost process


# ---- the caller's side --------------------------------------------------------------------

_SERVE = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('s1k_template', sys.argv[1]); "
          "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); m._serve(int(sys.argv[2]))")


class _Renderer:
    def __init__(self):
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.memory = None

    def _start(self):
        if self.proc is not None and self.proc.poll() is None and self.memory == RENDER_MEMORY_BYTES:
            return self.proc
        self.stop()
        # -I: no PYTHON* variables, no user site, no current-folder imports. This file is
        # loaded by its path (it needs only the standard library and jinja2) and serves.
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _SERVE, os.path.abspath(__file__), str(int(RENDER_MEMORY_BYTES))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.memory = RENDER_MEMORY_BYTES
        # Start-up (Python, jinja2) is not the template's time: wait for "ready" apart.
        line, why = self._read_line(self.proc, time.monotonic() + _STARTUP_SECONDS, 64)
        if line != b"ready\n":
            self.stop()
            return None
        return self.proc

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout):
                f.close()
        self.proc = None

    def render(self, request: bytes, seconds: float, max_chars: int) -> dict:
        """The renderer's reply; {'error': ...} when it is killed or stops."""
        with self.lock:
            proc = self._start()
            if proc is None:
                return {"error": f"the renderer process did not start within {_STARTUP_SECONDS:g} s "
                                 f"(is jinja2 installed for {sys.executable}?)"}
            deadline = time.monotonic() + seconds
            try:
                proc.stdin.write(request)
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self.stop()
                return {"error": "the renderer process stopped"}
            reply, why = self._read_line(proc, deadline, max_chars)
            if reply is None:
                self.stop()
                return {"error": why}
            return json.loads(reply)

    @staticmethod
    def _read_line(proc, deadline: float, max_chars: int) -> tuple[bytes | None, str]:
        """One reply line, or None and why there is none."""
        fd = proc.stdout.fileno()
        chunks, size = [], 0
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None, (f"rendering took longer than {RENDER_SECONDS:g} s; "
                                  f"the template is not usable as a chat template")
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    return None, (f"the renderer process stopped (exit status {proc.wait()}), most likely "
                                  f"past its memory limit of {RENDER_MEMORY_BYTES} bytes")
                chunks.append(chunk)
                size += len(chunk)
                if chunk.endswith(b"\n"):
                    return b"".join(chunks), ""
                if size > 8 * max_chars + 4096:  # JSON escapes take at most ~6 bytes a character
                    return None, f"the output passed {max_chars} characters"


_RENDERER = _Renderer()


def render(template: str, source: str, **variables) -> str:
    """`template` rendered with `variables` (JSON values: messages, flags, token strings);
    ValueError naming `source` when it fails to compile or render, or passes the time,
    memory or size bound."""
    try:
        request = (json.dumps({"template": template, "variables": variables, "max_chars": int(MAX_OUTPUT_CHARS)})
                   + "\n").encode()
    except (TypeError, ValueError) as e:
        from s1kernels import checks  # here: the renderer runs this file alone, without the package

        raise checks.argument_error("chat template variables", "JSON values (messages of strings)", e,
                                    TypeError) from None
    reply = _RENDERER.render(request, float(RENDER_SECONDS), int(MAX_OUTPUT_CHARS))
    if "error" in reply:
        raise ValueError(f"chat template: {source}: {reply['error']}")
    return reply["text"]

