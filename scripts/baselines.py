"""Collect the model zoo's cards into results/baselines/medmnist_clean.csv (measured vs published).

    python scripts/baselines.py [--zoo models] [--model resnet18_28]

Each row's ``command`` is the training command stored in the model card, so
the table says how to reproduce every number in it.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from bench.config import REPO_ROOT

# MedMNIST v2 (Yang et al., Scientific Data 2023), ResNet-18 (28): test ACC, AUC.
PUBLISHED = {"breastmnist": (0.863, 0.901), "pneumoniamnist": (0.854, 0.944)}
COLUMNS = ("dataset", "model", "seed", "test_acc", "test_auc", "published_acc", "published_auc", "command")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--model", default="resnet18_28")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "baselines" / "medmnist_clean.csv")
    args = parser.parse_args()
    rows = []
    for flag, (acc, auc) in PUBLISHED.items():
        for card_file in sorted((args.zoo / f"{flag}_28").glob(f"{args.model}_seed*.json")):
            card = json.loads(card_file.read_text())
            rows.append({
                "dataset": flag, "model": card["name"], "seed": card["seed"],
                "test_acc": f"{card['metrics']['test_acc']:.4f}", "test_auc": f"{card['metrics']['test_auc']:.4f}",
                "published_acc": acc, "published_auc": auc, "command": card["train"].get("command", ""),
            })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(args.out)
    for row in rows:
        print(", ".join(str(row[c]) for c in COLUMNS[:7]))
    print(f"wrote {args.out} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
