import sys

from s1kernels.eval.__main__ import suite_main

sys.exit(suite_main())
