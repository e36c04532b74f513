"""Render the leaderboard CSVs into results/README.md, results/leaderboard.html and results/figures/.

A thin entry point: the program is bench/cli/leaderboard.py (the same as `medbench leaderboard`).
"""

import sys

from bench.cli.leaderboard import main

if __name__ == "__main__":
    sys.exit(main())
