"""The corruption track (MedMNIST-C): balanced error of a model, with its defense, under common corruptions.

A thin entry point: the program is bench/cli/corrupt.py (the same as `medbench corrupt`).
"""

import sys

from bench.cli.corrupt import main

if __name__ == "__main__":
    sys.exit(main())
