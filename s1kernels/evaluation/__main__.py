import sys

from s1kernels.evaluation.suite import main

sys.exit(main())
