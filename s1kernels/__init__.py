"""s1kernels: kernels and tools for the s1 recipe (select -> train -> budget-forced decode)."""
__version__ = "0.1.0"

from s1kernels.backend import info  # noqa: E402,F401
