"""``python -m synbench.report``: the command line lives in cli.py, so importing the package runs nothing."""

import sys

from synbench.report.cli import main

sys.exit(main())
