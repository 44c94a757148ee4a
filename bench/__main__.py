"""`python -m bench <scenario> [options]`; `python -m bench --help` lists the scenarios."""

import sys

from bench.harness.cli import main
from bench.scenarios import SCENARIOS

if __name__ == "__main__":
    sys.exit(main(SCENARIOS))
