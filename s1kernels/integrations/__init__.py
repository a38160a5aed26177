"""Drop-in integrations with the stacks users already run (transformers, TRL).

`s1kernels.integrations.transformers` holds the entry points; the other modules are its parts.
"""
