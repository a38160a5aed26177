"""The s1 evaluation: budget forcing against majority voting and the length-control
baselines, measured by Control, Scaling and Performance (``python -m s1kernels.evaluation``).

    metrics.py   Control / Scaling / Performance, thinking lengths from emitted tokens, voting
    runs.py      each method at its settings, one record per question and sample
    plots.py     sequential vs parallel figure, the built-in task's seed-spread figures
    suite.py     the command: figure + baselines table + extension strings table + JSONL
    task_figures.py   the built-in task over training seeds (docs/ PNGs)
"""
