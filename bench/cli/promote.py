"""Promote finished evaluations from the local leaderboard (outputs/leaderboard/) into results/leaderboard/.

    python scripts/promote.py                      # every evaluation that meets the admission rules
    python scripts/promote.py --dry-run            # say what would be promoted, and why the rest would not
    python scripts/promote.py --config-hash 5fc3de1d4201 --model resnet18_native_seed0
    python scripts/promote.py --include-flagged    # also whole standard evaluations that only their flags keep out
    python scripts/promote.py --include-unranked   # keep the others on record too (never ranked)
    python scripts/leaderboard.py                  # then re-render results/README.md, the page and figures

Runs never write to results/: this is the only step that does. An evaluation is
copied whole (every attack row and the battery's worst case) by a locked, atomic
upsert per track file, so promoting twice changes nothing. The admission rules are
printed by ``--rules`` and in results/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.config import workspace_root
from bench.errors import BenchError
from bench.leaderboard.admission import rules_markdown
from bench.leaderboard.promote import promote


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=Path, default=workspace_root() / "outputs" / "leaderboard",
                        help="the local leaderboard runs wrote (paths.leaderboard_dir)")
    parser.add_argument("--to", dest="target", type=Path, default=workspace_root() / "results" / "leaderboard",
                        help="the tracked leaderboard")
    parser.add_argument("--config-hash", action="append", default=[], help="promote only these runs (repeatable)")
    parser.add_argument("--model", action="append", default=[], help="promote only these models, e.g. resnet18_28_seed0")
    parser.add_argument("--include-unranked", action="store_true",
                        help="also copy evaluations that fail the admission rules (kept, shown as unranked)")
    parser.add_argument("--include-flagged", action="store_true",
                        help="also copy whole standard-battery evaluations that fail only on their checks' flags "
                             "(an unreliable defense, a model below its baseline): kept as findings, unranked")
    parser.add_argument("--dry-run", action="store_true", help="print the decisions, write nothing")
    parser.add_argument("--rules", action="store_true", help="print the admission rules and exit")
    args = parser.parse_args(argv)
    if args.rules:
        print("\n".join(rules_markdown()))
        return 0
    try:
        decisions = promote(args.source, args.target, args.config_hash, args.model, args.include_unranked,
                            args.dry_run, args.include_flagged)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for d in decisions:
        print(d.line(args.dry_run))
    from bench.leaderboard.certified import promote_certified
    from bench.leaderboard.corruption import promote_corruption

    for line in promote_certified(args.source, args.target, args.dry_run):  # the certified track: whole splits only
        print(line)
    for line in promote_corruption(args.source, args.target, args.dry_run):  # corruptions: complete evaluations only
        print(line)
    promoted = sum(d.promote for d in decisions)
    verb = "would be promoted" if args.dry_run else "promoted"
    print(f"{promoted} of {len(decisions)} evaluation(s) {verb} into {args.target}"
          + ("" if args.dry_run or not promoted else "; now run python scripts/leaderboard.py"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
