"""Says when training runs far below what the machine gives, and why it probably does.

Tokens per second are measured over intervals of at least `interval` seconds (one step can be
much shorter than that, and single steps jitter). A run is "slow" when an interval's rate falls
below 1/`factor` of the best interval of this run, or, on a CPU, when the other processes on
the machine want every CPU (load average minus this run's own threads >= CPUs): then even
the first interval is far below what the machine gives when it is idle. The typical cause on
a CPU is torch's OpenMP threads spinning on cores that another busy process also uses.
"""
from __future__ import annotations

import os
import time
from s1kernels import checks


class ThroughputWatch:
    def __init__(self, cpu: bool, threads: int, interval: float = 5.0, factor: float = 3.0,
                 clock=time.perf_counter, loadavg=os.getloadavg, cpus: int | None = None):
        if interval <= 0 or factor <= 1:
            raise checks.argument_error("interval, factor", "> 0 and > 1", f"{interval}, {factor}")
        self.cpu, self.threads, self.interval, self.factor = cpu, threads, interval, factor
        self.clock, self.loadavg = clock, loadavg
        self.cpus = cpus or os.cpu_count() or 1
        self.t0, self.tokens = clock(), 0
        self.best = 0.0
        self.rate: float | None = None  # the last full interval's tokens/s
        self.status = ""  # short text for a progress bar while the run is slow, else ""

    def load(self) -> float | None:
        try:
            return float(self.loadavg()[0])
        except (OSError, AttributeError):  # no load average on this platform
            return None

    def update(self, tokens: int) -> str | None:
        """Counts `tokens` more; at the end of an interval returns a one-line note when the run
        has just become slow (None otherwise: fine, still slow, or mid-interval)."""
        self.tokens += tokens
        now = self.clock()
        if now - self.t0 < self.interval:
            return None
        self.rate = self.tokens / (now - self.t0)
        self.t0, self.tokens = now, 0
        self.best = max(self.best, self.rate)
        load = self.load()
        others = None if load is None else load - self.threads
        crowded = self.cpu and others is not None and others >= self.cpus - 0.5
        dropped = self.rate < self.best / self.factor
        was_slow = bool(self.status)
        if not (crowded or dropped):
            self.status = ""
            return None
        where = f"load average {load:.1f} on {self.cpus} CPUs" if load is not None else "load unknown"
        if dropped:
            self.status = f"{self.best / self.rate:.0f}x below best; {where}"
            what = (f"{self.rate:,.0f} tokens/s, {self.best / self.rate:.1f}x below this run's best "
                    f"({self.best:,.0f}); {where}")
        else:
            self.status = f"machine busy; {where}"
            what = f"{self.rate:,.0f} tokens/s with the CPUs busy ({where}); an idle machine gives more"
        if was_slow:
            return None
        hint = (" Other processes are using the CPUs; fewer torch threads (--threads 1) lose least."
                if self.cpu and self.threads > 1 else " Other processes are using the machine.")
        return f"note: training is slow: {what}.{hint}"
