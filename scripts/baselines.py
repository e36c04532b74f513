"""Add the model zoo's clean test metrics to results/baselines/medmnist_clean.csv, beside the published ones.

A thin entry point: the program is bench/cli/baselines.py (the same as `medbench baselines`).
"""

import sys

from bench.cli.baselines import main

if __name__ == "__main__":
    sys.exit(main())
