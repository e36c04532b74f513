"""Check every attack against a reference implementation at the same budget.

    python scripts/validate_attacks.py [--datasets breastmnist pneumoniamnist] [--n 200] [--quick]

For each real dataset, a ResNet-18 (timm stem: cheap enough for a CPU) is
loaded from the model zoo or trained (seed 0). Each of our attacks runs beside
its reference (foolbox for PGD, C&W, DeepFool, FMN and HopSkipJump;
torchattacks for APGD and Square) on the same test subset, with the same
steps, queries and epsilons. Robust accuracy is over all n samples (a clean
error is non-robust); seconds are per epsilon (one call serves all epsilons
where the implementation allows it). Ours must be at least as strong: robust accuracy no more
than 1 point above the reference's. Writes results/validation/attack_agreement.csv
(needs the [compare] extra for torchattacks).
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import foolbox as fb
import torch

from bench.attacks import build_attack
from bench.config import REPO_ROOT
from bench.data import load_split
from bench.models import ModelSpec
from bench.tasks import Task
from bench.train import TrainConfig
from bench.zoo import get_or_train

COLUMNS = ("dataset", "attack", "norm", "eps", "reference", "ours_robust_acc", "reference_robust_acc",
           "difference", "ours_seconds", "reference_seconds")
LINF = [1 / 255, 2 / 255, 4 / 255, 8 / 255]
L2 = [0.1, 0.25, 0.5, 1.0]


@dataclass
class Pair:
    """One of our attacks (registry name, norm, params) and its reference, at the same budget."""

    attack_id: str
    name: str
    norm: str
    params: dict
    epsilons: list[float]
    reference: str
    run_reference: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, list[float]], list[torch.Tensor]]


def foolbox_ref(make: Callable[[], object]):
    """foolbox takes every epsilon in one call (minimisation attacks then run once, as ours do)."""
    def run(model, x, y, epsilons):
        attack = make()
        _, clipped, _ = attack(fb.PyTorchModel(model, bounds=(0, 1)), x, y, epsilons=list(epsilons))
        return list(clipped)
    return run


def torchattacks_ref(make: Callable[[torch.nn.Module, float], object]):
    def run(model, x, y, epsilons):
        return [make(model, eps)(x, y) for eps in epsilons]
    return run


def pairs(steps: int, queries: int, decision_queries: int) -> list[Pair]:
    import torchattacks as ta

    return [
        Pair("pgd_linf", "pgd", "linf", {"steps": steps, "rel_stepsize": 0.25}, LINF, f"foolbox.LinfPGD(steps={steps})",
             foolbox_ref(lambda: fb.attacks.LinfPGD(steps=steps, rel_stepsize=0.25))),
        Pair("pgd_l2", "pgd", "l2", {"steps": steps, "rel_stepsize": 0.25}, L2, f"foolbox.L2PGD(steps={steps})",
             foolbox_ref(lambda: fb.attacks.L2PGD(steps=steps, rel_stepsize=0.25))),
        Pair("apgd_ce", "apgd", "linf", {"steps": steps, "loss": "ce"}, LINF, f"torchattacks.APGD(ce, steps={steps})",
             torchattacks_ref(lambda m, e: ta.APGD(m, norm="Linf", eps=e, steps=steps, loss="ce", n_restarts=1, seed=0))),
        Pair("apgd_l2", "apgd", "l2", {"steps": steps, "loss": "ce"}, L2, f"torchattacks.APGD(L2, ce, steps={steps})",
             torchattacks_ref(lambda m, e: ta.APGD(m, norm="L2", eps=e, steps=steps, loss="ce", n_restarts=1, seed=0))),
        Pair("cw_l2", "cw", "l2", {"steps": steps, "binary_search_steps": 5}, L2, f"foolbox.L2CarliniWagnerAttack(bs=5, steps={steps})",
             foolbox_ref(lambda: fb.attacks.L2CarliniWagnerAttack(binary_search_steps=5, steps=steps))),
        Pair("deepfool_l2", "deepfool", "l2", {"steps": 50}, L2, "foolbox.L2DeepFoolAttack(steps=50)",
             foolbox_ref(lambda: fb.attacks.L2DeepFoolAttack(steps=50))),
        Pair("deepfool_linf", "deepfool", "linf", {"steps": 50}, LINF, "foolbox.LinfDeepFoolAttack(steps=50)",
             foolbox_ref(lambda: fb.attacks.LinfDeepFoolAttack(steps=50))),
        Pair("fmn_linf", "fmn", "linf", {"steps": steps}, LINF, f"foolbox.LInfFMNAttack(steps={steps})",
             foolbox_ref(lambda: fb.attacks.LInfFMNAttack(steps=steps))),
        Pair("fmn_l2", "fmn", "l2", {"steps": steps}, L2, f"foolbox.L2FMNAttack(steps={steps})",
             foolbox_ref(lambda: fb.attacks.L2FMNAttack(steps=steps))),
        Pair("square_linf", "square", "linf", {"max_queries": queries, "p_init": 0.8}, [2 / 255, 8 / 255],
             f"torchattacks.Square(n_queries={queries})",
             torchattacks_ref(lambda m, e: ta.Square(m, norm="Linf", eps=e, n_queries=queries, n_restarts=1, p_init=0.8, loss="margin", seed=0))),
        Pair("hopskipjump_l2", "decision", "l2", {"attack": "HopSkipJumpAttack", "max_queries": decision_queries}, [0.5, 1.0],
             f"foolbox.HopSkipJumpAttack(cut at {decision_queries} queries)",
             hsj_reference(decision_queries)),
    ]


def hsj_reference(budget: int):
    """foolbox's own HopSkipJump, cut off at the same per-sample query budget.

    A decision-based attack's budget is part of its definition, and foolbox's
    HopSkipJump has no budget of its own (its random initialisation alone can
    spend over a thousand queries), so the reference is foolbox's attack run
    through the same lockstep query counter, keeping the closest adversarial
    point it queried. The row checks that our adapter loses nothing.
    """
    def run(model, x, y, epsilons):
        from bench.attacks.criteria import Criterion
        from bench.attacks.decision import QueryBudgetModel, _BudgetExhausted
        from bench.tasks import get_task

        guard = QueryBudgetModel(model, x, Criterion(get_task("binary-class"), y), "l2", budget).eval()
        try:
            fb.attacks.HopSkipJumpAttack(constraint="l2")(fb.PyTorchModel(guard, bounds=(0, 1)), x, y, epsilons=None)
        except _BudgetExhausted:
            pass
        inside = lambda eps: (guard.best_norm <= eps).view(-1, *[1] * (x.dim() - 1))  # noqa: E731
        return [torch.where(inside(eps), guard.best, x) for eps in epsilons]
    return run


def robust_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, task: Task, clean: torch.Tensor) -> float:
    with torch.no_grad():
        still = task.correct(model(x_adv), y)
    return float((clean & still).float().mean())


def validate(flag: str, n: int, steps: int, queries: int, decision_queries: int, zoo: Path, root: str | None, only: set[str]) -> list[dict]:
    spec = ModelSpec("resnet18_native", "resnet18", "native")
    from bench.data import dataset_info

    n = min(n, dataset_info(flag).n_samples["test"])
    split = load_split(flag, "test", root=root, n_examples=n, seed=0)
    info = split.info
    model, card, _ = get_or_train(spec, flag, 28, root, TrainConfig(epochs=30, seed=0), zoo, info.n_channels, info.num_classes)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x, y, task = split.images, split.labels, info.task
    with torch.no_grad():
        clean = task.correct(model(x), y)
    print(f"{flag}: n={n}, clean accuracy {float(clean.float().mean()):.3f} (model {card.name}, test AUC {card.metrics['test_auc']:.3f})", flush=True)
    rows = []
    for pair in pairs(steps, queries, decision_queries):
        if only and pair.attack_id not in only:
            continue
        attack = build_attack(pair.name, pair.norm, 0, pair.params)
        idx = clean.nonzero().view(-1)  # both sides attack the clean-correct samples
        started = time.perf_counter()
        ours = attack(model, x[idx], y[idx], pair.epsilons, task)
        ours_s = (time.perf_counter() - started) / len(pair.epsilons)
        torch.manual_seed(0)
        started = time.perf_counter()
        refs = pair.run_reference(model, x[idx], y[idx], pair.epsilons)
        ref_s = (time.perf_counter() - started) / len(pair.epsilons)
        for eps, out, ref in zip(pair.epsilons, ours, refs):
            ours_adv, ref_adv = x.clone(), x.clone()
            ours_adv[idx], ref_adv[idx] = out.x_adv, ref.detach()
            ours_acc = robust_accuracy(model, x, y, ours_adv, task, clean)
            ref_acc = robust_accuracy(model, x, y, ref_adv, task, clean)
            row = {"dataset": flag, "attack": pair.attack_id, "norm": pair.norm, "eps": f"{eps:.6g}", "reference": pair.reference,
                   "ours_robust_acc": f"{ours_acc:.4f}", "reference_robust_acc": f"{ref_acc:.4f}",
                   "difference": f"{ours_acc - ref_acc:+.4f}", "ours_seconds": f"{ours_s:.2f}", "reference_seconds": f"{ref_s:.2f}"}
            rows.append(row)
            mark = "OK" if ours_acc <= ref_acc + 0.01 else "WEAKER"
            print(f"  {pair.attack_id:15s} eps {eps:.4f}: ours {ours_acc:.4f} ({ours_s:.1f}s/eps)  ref {ref_acc:.4f} ({ref_s:.1f}s/eps)  {mark}", flush=True)
    return rows


def write_rows(out: Path, rows: list[dict], merge: bool) -> list[dict]:
    """Write atomically; with ``merge``, keep the rows of (dataset, attack) pairs not re-run here."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if merge and out.exists():
        with open(out, newline="") as fh:
            old = list(csv.DictReader(fh))
        redone = {(r["dataset"], r["attack"]) for r in rows}
        rows = [r for r in old if (r["dataset"], r["attack"]) not in redone] + rows
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(out)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["breastmnist", "pneumoniamnist"])
    parser.add_argument("--n", type=int, default=200, help="test samples per dataset (a seeded subset)")
    parser.add_argument("--steps", type=int, default=20, help="iterations for PGD, APGD, C&W, FMN")
    parser.add_argument("--queries", type=int, default=500, help="Square's query budget")
    parser.add_argument("--decision-queries", type=int, default=1000, help="HopSkipJump's query budget")
    parser.add_argument("--merge", action="store_true", help="replace only the (dataset, attack) rows re-run here in an existing CSV")
    parser.add_argument("--only", nargs="*", default=[], help="attack ids to run (default: all)")
    parser.add_argument("--zoo", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--root", default=None, help="data root (default: $MEDMNIST_ROOT)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "validation" / "attack_agreement.csv")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows: list[dict] = []
    for flag in args.datasets:
        rows += validate(flag, args.n, args.steps, args.queries, args.decision_queries, args.zoo, args.root, set(args.only))
        write_rows(args.out, rows, args.merge)  # after each dataset, so a long run keeps what it measured
    rows = write_rows(args.out, rows, args.merge)
    worst = sorted(rows, key=lambda r: -float(r["difference"]))[:5]
    print(f"wrote {args.out} ({len(rows)} rows); worst differences (ours - reference):")
    for r in worst:
        print(f"  {r['dataset']} {r['attack']} eps {r['eps']}: {r['difference']}")


if __name__ == "__main__":
    main()
