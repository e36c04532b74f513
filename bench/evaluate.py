"""Run attacks over a split batch by batch and turn per-sample outcomes into summary rows.

Only samples classified correctly when clean are attacked (the others are
already non-robust). A battery's robust accuracy is the per-sample worst case
over its attacks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from bench import metrics
from bench.attacks import Attack, flat_norm
from bench.data import Split
from bench.progress import progress


@dataclass
class EpsOutcome:
    """Per-sample outcome of one attack at one epsilon (tensors of length n)."""

    eps: float
    robust: torch.Tensor  # clean-correct and still correct under attack
    success: torch.Tensor  # clean-correct and fooled
    linf: torch.Tensor  # perturbation norms (NaN where the sample was not attacked)
    l2: torch.Tensor
    seconds: float = 0.0


@dataclass
class AttackResult:
    """One attack's outcomes over the split, at every epsilon."""

    attack_id: str
    norm: str
    clean_correct: torch.Tensor
    by_eps: dict[float, EpsOutcome] = field(default_factory=dict)


@torch.no_grad()
def clean_correct_mask(model: nn.Module, split: Split, batch_size: int, device: str) -> torch.Tensor:
    model.eval()
    task = split.info.task
    out = []
    for x, y, _ in split.batches(batch_size):
        out.append(task.correct(model(x.to(device)), y.to(device)).cpu())
    return torch.cat(out)


def run_attack(
    model: nn.Module,
    split: Split,
    attack: Attack,
    attack_id: str,
    epsilons: Sequence[float],
    batch_size: int,
    device: str,
    clean_correct: torch.Tensor,
) -> AttackResult:
    """Attack every clean-correct sample at every epsilon; per-sample outcomes."""
    n = len(split)
    task = split.info.task
    result = AttackResult(attack_id, attack.norm, clean_correct)
    for eps in epsilons:
        nan = torch.full((n,), math.nan)
        result.by_eps[eps] = EpsOutcome(eps, torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool), nan, nan.clone())
    bar = progress(range(0, n, batch_size), desc=f"{attack_id} on {split.info.track}", unit="batch")
    for start in bar:
        stop = min(start + batch_size, n)
        mask = clean_correct[start:stop]
        if not mask.any():
            continue
        rows = torch.arange(start, stop)[mask]
        x = split.images[rows].to(device)
        y = split.labels[rows].to(device)
        for out in attack(model, x, y, list(epsilons), task):
            with torch.no_grad():
                still = task.correct(model(out.x_adv), y).cpu()
            delta = (out.x_adv - x).float().cpu()
            outcome = result.by_eps[out.eps]
            outcome.robust[rows] = still
            outcome.success[rows] = ~still
            outcome.linf[rows] = flat_norm(delta, "linf")
            outcome.l2[rows] = flat_norm(delta, "l2")
            outcome.seconds += out.seconds
    return result


def summary_row(result: AttackResult, outcome: EpsOutcome) -> dict[str, float | int | str]:
    cc = result.clean_correct
    return {
        "attack": result.attack_id,
        "norm": result.norm,
        "eps": outcome.eps,
        "n": int(cc.numel()),
        "clean_acc": metrics.clean_acc(cc),
        "robust_acc": metrics.robust_acc(outcome.robust),
        "asr": metrics.attack_success_rate(cc, outcome.success),
        "linf_median": metrics.median_over_successes(outcome.linf, outcome.success),
        "l2_median": metrics.median_over_successes(outcome.l2, outcome.success),
        "seconds": round(outcome.seconds, 3),
    }


def worst_case(results: Sequence[AttackResult], battery_id: str) -> AttackResult:
    """Per-sample worst case over attacks of one norm: robust only if robust to all of them.

    Norms of a sample broken by several attacks are those of the smallest L2 perturbation.
    """
    first = results[0]
    combined = AttackResult(battery_id, first.norm, first.clean_correct)
    for eps in first.by_eps:
        outcomes = [r.by_eps[eps] for r in results if eps in r.by_eps]
        robust = torch.stack([o.robust for o in outcomes]).all(0)
        l2 = torch.stack([torch.where(o.success, o.l2, torch.full_like(o.l2, math.inf)) for o in outcomes])
        pick = l2.argmin(0)
        linf = torch.stack([o.linf for o in outcomes]).gather(0, pick.view(1, -1)).view(-1)
        success = first.clean_correct & ~robust
        combined.by_eps[eps] = EpsOutcome(
            eps,
            robust,
            success,
            torch.where(success, linf, torch.full_like(linf, math.nan)),
            torch.where(success, l2.gather(0, pick.view(1, -1)).view(-1), torch.full_like(linf, math.nan)),
            sum(o.seconds for o in outcomes),
        )
    return combined
