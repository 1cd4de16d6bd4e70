import sys

from synbench.app import main
from synbench.runner import check_overrides

check_overrides(sys.argv[1:], "synbench")
main()
