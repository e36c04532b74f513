"""How strong is BPDA through each non-differentiable input transform, per gradient approximation?

    python scripts/validate_bpda.py [--datasets breastmnist pneumoniamnist] [--n 128] [--defenses jpeg]

For each dataset, the leaderboard's undefended backbone (``resnet18_native``, seed 0, the results' epochs) is
loaded from the zoo or trained, wrapped by each transform, and attacked with APGD-CE (100 steps, the standard
battery's) on the first n test images three ways: through the transform as autograd sees it (a zero gradient),
through the identity (straight-through BPDA), and through the transform's differentiable surrogate where it has
one (JPEG's). Robust accuracy is over all n (a clean error is non-robust), judged on the real transform. The
approximation a defense declares should be the strongest: that is what this table checks. Writes
results/validation/bpda.csv.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

from bench.attacks import build_attack
from bench.config import REPO_ROOT
from bench.data import load_split
from bench.defenses import DEFENSES, Declaration, Defense, DefenseSpec, build_defense
from bench.models import ModelSpec
from bench.train import TrainConfig
from bench.zoo import get_or_train

COLUMNS = ("dataset", "defense", "weights", "n", "eps", "gradient", "declared", "robust_acc", "seconds")
EPOCHS = {"breastmnist": 30, "pneumoniamnist": 10}  # the undefended backbones of results/README.md
APGD = {"steps": 100, "loss": "ce", "restarts": 1, "rho": 0.75}


def views(defense: Defense) -> dict[str, torch.nn.Module]:
    """The ways a gradient attack can differentiate ``defense``: plain, identity BPDA, surrogate BPDA."""
    out = {"none (autograd)": defense,
           "straight_through": defense.view(straight_through=True,
                                            declaration=Declaration(differentiable=False, transforms_input=True))}
    if defense.has_surrogate():
        out["surrogate"] = defense.view(straight_through=True, declaration=Declaration(
            differentiable=False, gradient="surrogate", transforms_input=True))
    return out


def run(dataset: str, defenses: list[str], n: int, epsilons: list[float], zoo: Path, root: str | None) -> list[dict]:
    split = load_split(dataset, "test", 28, root)
    info = split.info
    spec = ModelSpec("resnet18_native", "resnet18", "native")
    model, card, _ = get_or_train(spec, dataset, 28, root, TrainConfig(epochs=EPOCHS[dataset], seed=0), zoo,
                                  info.n_channels, info.num_classes)
    x, y = split.images[:n], split.labels[:n]
    rows = []
    for name in defenses:
        defense = build_defense(DefenseSpec(name), model.eval()).eval()
        declared = DEFENSES[name].declaration.gradient
        for gradient, view in views(defense).items():
            attack = build_attack("apgd", "linf", 0, APGD)
            start = time.perf_counter()
            outputs = attack(view, x, y, epsilons, info.task)
            seconds = (time.perf_counter() - start) / len(epsilons)
            for eps, out in zip(epsilons, outputs):
                with torch.no_grad():
                    robust = float(info.task.correct(defense(out.x_adv), y).float().mean())
                rows.append({"dataset": dataset, "defense": defense.describe(), "weights": card.sha256[:8], "n": n,
                             "eps": f"{round(eps * 255)}/255", "gradient": gradient,
                             "declared": "yes" if gradient == declared else "", "robust_acc": f"{robust:.4f}",
                             "seconds": f"{seconds:.1f}"})
                print(" ".join(f"{rows[-1][c]}" for c in COLUMNS), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["breastmnist", "pneumoniamnist"])
    parser.add_argument("--defenses", nargs="+", default=["jpeg"], help="non-differentiable input transforms")
    parser.add_argument("--n", type=int, default=128, help="the first n test images")
    parser.add_argument("--eps", nargs="+", type=float, default=[2, 4], help="L-inf epsilons, in 1/255")
    parser.add_argument("--zoo", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--root", default=None, help="data root (default: $MEDMNIST_ROOT)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "validation" / "bpda.csv")
    args = parser.parse_args()
    rows = [r for d in args.datasets for r in run(d, args.defenses, args.n, [e / 255 for e in args.eps], args.zoo,
                                                      args.root)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
