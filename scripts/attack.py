"""Run one experiment: dataset x model x attack (or battery); writes summary.json, a leaderboard row, a W&B run.

A thin entry point: the program is bench/cli/attack.py (the same as `medbench attack`).
"""

import sys

from bench.cli.attack import main

if __name__ == "__main__":
    sys.exit(main())
