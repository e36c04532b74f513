"""Train one classifier into the model zoo.

A thin entry point: the program is bench/cli/train.py (the same as `medbench train`).
"""

import sys

from bench.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
