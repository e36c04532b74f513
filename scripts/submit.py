"""Check and evaluate a defense submission (a folder: submission.yaml + safetensors weights; results/SUBMITTING.md).

A thin entry point: the program is bench/cli/submit.py (the same as `medbench submit`).
"""

import sys

from bench.cli.submit import main

if __name__ == "__main__":
    sys.exit(main())
