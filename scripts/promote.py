"""Promote finished evaluations from the local leaderboard (outputs/leaderboard/) into results/leaderboard/.

A thin entry point: the program is bench/cli/promote.py (the same as `medbench promote`).
"""

import sys

from bench.cli.promote import main

if __name__ == "__main__":
    sys.exit(main())
