"""`python -m s1kernels.evaluation` runs the evaluation suite's command
(`s1kernels.eval.__main__.suite_main`) and holds nothing else: the suite is s1kernels.eval.suite."""
