"""What the CPU comparison scripts in bench/ (the *_cpu.py files) share: reading the resident
set, the machine line of a report, and writing the report."""
from __future__ import annotations

import os
import platform


def status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS: resident now, VmHWM: peak since the last
    reset through /proc/self/clear_refs)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def machine() -> str:
    """e.g. 'x86_64, 2 cores (Intel(R) Xeon(R) Processor)'."""
    return f"{platform.machine()}, {os.cpu_count()} cores ({platform.processor() or 'cpu'})"


def write_report(lines: list[str], out: str | None) -> str:
    """Joins `lines` into the report, prints it and writes it to `out` (None or "-": print only)."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out and out != "-":
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
    return text
