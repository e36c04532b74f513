"""Add the model zoo's clean test metrics to results/baselines/medmnist_clean.csv, beside the published ones.

    python scripts/baselines.py [--zoo models] [--model resnet18_28] [--dry-run]

The table is merged, never replaced: a row is keyed by (dataset, model, seed,
training settings); a zoo model updates its own row and every committed row the
local zoo lacks is kept. Only models trained on the whole train split are
collected (a smoke model trained on a subset is skipped, and said so). Each row's
``command`` is the training command stored in the model card, without machine-local
``paths.*`` overrides, so the table says how to reproduce every number in it.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shlex
import sys
from pathlib import Path

from bench.atomic import atomic_write
from bench.config import workspace_root
from bench.published import published_for_model
from bench.zoo import describe_training, training_command

COLUMNS = ("dataset", "model", "seed", "train", "test_acc", "test_auc", "published_model", "published_acc",
           "published_auc", "command")
KEY = ("dataset", "model", "seed", "train")


def portable_command(command: str) -> str:
    """The training command without ``paths.*=...`` overrides (where files went on one machine)."""
    return " ".join(shlex.quote(a) for a in shlex.split(command) if not a.startswith("paths."))


def read_table(path: Path) -> list[dict[str, str]]:
    """The committed rows; a file from before a column was added reads with that column empty."""
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        unknown = [c for c in reader.fieldnames or [] if c not in COLUMNS]
        if unknown:
            raise SystemExit(f"error: {path} has unknown column(s) {unknown}; expected {', '.join(COLUMNS)}. "
                             "Fix the header; the file was left unchanged.")
        return [{c: row.get(c) or "" for c in COLUMNS} for row in reader]


def zoo_rows(zoo: Path, model: str | None) -> tuple[list[dict[str, str]], list[str]]:
    """One row per card trained on the whole train split; and why the other cards were skipped."""
    rows, skipped = [], []
    for card_file in sorted(zoo.glob("*/*.json")):
        card = json.loads(card_file.read_text())
        if model and card.get("name") != model:
            continue
        if card.get("train", {}).get("n_train") is not None:
            skipped.append(f"{card_file.relative_to(zoo)} (trained on a subset of {card['train']['n_train']} images)")
            continue
        published = published_for_model(card["dataset"], card["size"], card.get("arch", ""), card.get("volume") or "acs")
        rows.append({
            "dataset": card["dataset"], "model": card["name"], "seed": str(card["seed"]),
            "train": describe_training(card.get("train", {})),
            "test_acc": f"{card['metrics']['test_acc']:.4f}", "test_auc": f"{card['metrics']['test_auc']:.4f}",
            "published_model": published.source if published else "",
            "published_acc": f"{published.acc}" if published else "", "published_auc": f"{published.auc}" if published else "",
            "command": card.get("train", {}).get("command") or training_command(card),
        })
    return rows, skipped


def merge(committed: list[dict[str, str]], new: list[dict[str, str]]) -> list[dict[str, str]]:
    """Committed rows in their order, updated where the zoo has the same key; the zoo's new rows after them."""
    by_key = {tuple(r[k] for k in KEY): r for r in new}
    merged = [by_key.pop(tuple(r[k] for k in KEY), r) for r in committed]
    merged += list(by_key.values())
    return [{**r, "command": portable_command(r["command"])} for r in merged]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", type=Path, default=workspace_root() / "models")
    parser.add_argument("--model", default=None, help="only this model recipe (default: every model in the zoo)")
    parser.add_argument("--out", type=Path, default=workspace_root() / "results" / "baselines" / "medmnist_clean.csv")
    parser.add_argument("--dry-run", action="store_true", help="print the merged table, write nothing")
    args = parser.parse_args(argv)
    committed = read_table(args.out)
    new, skipped = zoo_rows(args.zoo, args.model)
    rows = merge(committed, new)
    for entry in skipped:
        print(f"skipped {entry}")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    print(buffer.getvalue(), end="")
    if not args.dry_run:
        atomic_write(args.out, buffer.getvalue())
        print(f"wrote {args.out} ({len(rows)} rows: {len(committed)} committed before, {len(new)} from the zoo)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
