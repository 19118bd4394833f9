"""python -m benchmark.sweep: the sweep's command line (`benchmark.sweep.cli`)."""

import sys

from benchmark.sweep.cli import main

sys.exit(main())
