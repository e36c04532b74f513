"""Certify a randomised-smoothing classifier (Cohen et al. 2019): certified L2 accuracy at radii 0, 0.1, 0.25, 0.5.

A thin entry point: the program is bench/cli/certify.py (the same as `medbench certify`).
"""

import sys

from bench.cli.certify import main

if __name__ == "__main__":
    sys.exit(main())
