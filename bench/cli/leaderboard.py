"""Render the leaderboard CSVs into results/README.md, results/leaderboard.html and results/figures/.

    python scripts/leaderboard.py [--leaderboard-dir results/leaderboard]
                                  [--records-root outputs/records] [--out results]

The tracked CSVs change only through scripts/promote.py; to see your own runs'
rows under the same rules, render the local leaderboard elsewhere:

    python scripts/leaderboard.py --leaderboard-dir outputs/leaderboard --out outputs/report

Only the block between <!-- leaderboard:start --> and <!-- leaderboard:end --> of
README.md is replaced; the rest is hand-written and kept. The outputs depend on
the CSVs (and examples.npz files) alone, so a rerun on the same input changes
nothing; the admission rules are applied afresh every time. A malformed CSV (or
one bad cell) is named with its line and column, and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.config import workspace_root
from bench.errors import BenchError
from bench.report import write_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leaderboard-dir", type=Path, default=workspace_root() / "results" / "leaderboard",
                        help="folder of track CSVs <dataset>_<size>_<norm>.csv")
    parser.add_argument("--records-root", type=Path, default=workspace_root() / "outputs" / "records",
                        help="searched recursively for examples.npz (example grids); may be missing")
    parser.add_argument("--out", type=Path, default=workspace_root() / "results",
                        help="where README.md, leaderboard.html and figures/ go")
    args = parser.parse_args(argv)
    try:
        written = write_all(args.leaderboard_dir, args.records_root, args.out)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
