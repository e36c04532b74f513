"""Combine record sets written by shards in separate folders into one, then summarise by rerunning the command.

A thin entry point: the program is bench/cli/merge_records.py (the same as `medbench merge-records`).
"""

import sys

from bench.cli.merge_records import main

if __name__ == "__main__":
    sys.exit(main())
