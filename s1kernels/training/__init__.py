"""Training internals used by `python -m s1kernels.train`: data feeding, optimiser/schedule,
atomic checkpoints, and the distributed (FSDP2) setup."""
