import sys

from s1kernels.eval.__main__ import suite_main

# guarded: engines that spawn processes (vLLM) import the main module again in them
if __name__ == "__main__":
    sys.exit(suite_main())
