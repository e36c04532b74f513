"""What happened to every job of a sweep: done, failed, running, pending or lost.

A thin entry point: the program is bench/cli/sweep_status.py (the same as `medbench sweep-status`).
"""

import sys

from bench.cli.sweep_status import main

if __name__ == "__main__":
    sys.exit(main())
