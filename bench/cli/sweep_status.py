"""What happened to every job of a sweep: done (with its leaderboard rows), failed (the error's first line),
running, pending, or lost. Reads the jobs' own status files and SLURM's queue; never waits.

    python scripts/sweep_status.py                                   # the latest sweep under outputs/multirun
    python scripts/sweep_status.py outputs/multirun/2026-12-03/10-00-00
    python scripts/sweep_status.py <sweep dir> --json                # for scripts

Exits 0 when every job is done, 1 when any failed or is lost, 2 while some are still pending or running.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from bench.config import workspace_root
from bench.sweep.summary import format_summary, summarize


def latest_sweep(root: Path) -> Path | None:
    folders = sorted(p for p in root.glob("*/*") if p.is_dir())
    return folders[-1] if folders else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", nargs="?", help="the sweep's folder (hydra.sweep.dir); default: the latest")
    parser.add_argument("--json", action="store_true", help="print the jobs as JSON")
    args = parser.parse_args(argv)
    sweep_dir = Path(args.sweep_dir) if args.sweep_dir else latest_sweep(workspace_root() / "outputs" / "multirun")
    if sweep_dir is None or not sweep_dir.is_dir():
        print(f"error: no sweep folder {str(args.sweep_dir or 'under outputs/multirun')!r}; pass the folder a "
              "multirun printed ('sweep output dir'), e.g. outputs/multirun/<date>/<time>.", file=sys.stderr)
        return 1
    jobs = summarize(sweep_dir)
    print(json.dumps([asdict(j) for j in jobs], indent=2) if args.json else f"{sweep_dir}\n{format_summary(jobs)}")
    states = {j.state for j in jobs}
    if states & {"failed", "lost"}:
        return 1
    return 2 if states & {"pending", "running"} else 0


if __name__ == "__main__":
    sys.exit(main())
