"""Counts Triton cache hits and misses in every Python process of a gpu_proof step.

bench/gpu_proof.py puts this folder first on PYTHONPATH and names a file in S1K_TRITON_EVENTS;
once `triton.knobs` is imported, Triton's compilation listener appends one JSON line per
kernel lookup ({"hit": bool, "kernel": name, "pid": ...}). triton.compile calls the listener
for a cache hit as for a compile, so every variant a process loads is counted once. Nothing
happens in processes that never import Triton, and nothing at all without the variable.
"""
import os
import sys

_EVENTS = os.environ.get("S1K_TRITON_EVENTS")


def _listener(src=None, metadata=None, cache_hit=False, **_):
    import json

    name = (metadata or {}).get("name") or getattr(src, "name", "?")
    with open(_EVENTS, "a") as f:
        f.write(json.dumps({"hit": bool(cache_hit), "kernel": name, "pid": os.getpid()}) + "\n")


if _EVENTS:
    import importlib.abc
    import importlib.machinery

    class _AfterKnobs(importlib.abc.MetaPathFinder):
        """Finds triton.knobs as usual, then sets the listener once the module has run."""

        def find_spec(self, name, path, target=None):
            if name != "triton.knobs":
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path, target)
            if spec is None or spec.loader is None:
                return spec
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                try:
                    module.compilation.listener = _listener
                except AttributeError:  # a Triton without the listener knob: no counts, no harm
                    pass

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _AfterKnobs())
