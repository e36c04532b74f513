"""Combine record sets written by shards in separate folders into one, then summarise by rerunning the command.

    python scripts/merge_records.py outputs/shard0 outputs/shard1 --into outputs/merged
    python scripts/attack.py <the same overrides> records.dir=outputs/merged   # attacks nothing, writes the rows
"""

from __future__ import annotations

import argparse

from bench.errors import BenchError
from bench.records import merge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", help="record-set folders (each holds meta.json and batches/)")
    parser.add_argument("--into", required=True, help="the merged record set (created, or added to)")
    args = parser.parse_args()
    try:
        merged = merge(args.sources, args.into)
    except BenchError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"merged {len(args.sources)} record set(s) into {merged.root}: {len(merged.finished_batches())} batches")


if __name__ == "__main__":
    main()
