"""Data-selection stages (quality, difficulty, dedup, diversity) behind `python -m s1kernels.select`."""
