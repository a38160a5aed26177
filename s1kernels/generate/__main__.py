"""`python -m s1kernels.generate`: the generation CLI (see s1kernels.generate.main)."""
import sys

from s1kernels.generate import main

sys.exit(main())
