"""Reproduce a paper: run its experiment on each of its datasets, then write results/paper/<paper>.csv.

A thin entry point: the program is bench/cli/paper.py (the same as `medbench paper`).
"""

import sys

from bench.cli.paper import main

if __name__ == "__main__":
    sys.exit(main())
