"""Run attacks over a split batch by batch and turn per-sample outcomes into summary rows.

Only samples classified correctly when clean are attacked (the others are
already non-robust). Two battery modes:

- ``independent``: every attack sees every clean-correct sample; each attack's
  row is its own robust accuracy, and the battery row is the per-sample worst
  case.
- ``sequential`` (AutoAttack's way): each attack only sees the samples still
  robust after the attacks before it, at that epsilon; each attack's row is the
  robust accuracy *after* it, so the last one is the battery's worst case.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from bench import metrics
from bench.attacks import Attack, flat_norm
from bench.attacks.base import Attack as _Base
from bench.data import Split
from bench.progress import progress

BATTERY_MODES = ("independent", "sequential")


@dataclass
class PlannedAttack:
    """One attack of an experiment, with its epsilons and their readable labels."""

    attack_id: str
    attack: Attack
    epsilons: list[float]
    eps_labels: dict[float, str] = field(default_factory=dict)

    @property
    def one_pass(self) -> bool:
        """True when the attack serves every epsilon from one run (it overrides run_epsilons)."""
        return type(self.attack).run_epsilons is not _Base.run_epsilons


@dataclass
class EpsOutcome:
    """Per-sample outcome of one attack at one epsilon (tensors of length n)."""

    eps: float
    robust: torch.Tensor  # clean-correct and still correct under attack
    success: torch.Tensor  # clean-correct and the attack reached its goal
    linf: torch.Tensor  # perturbation norms (NaN where the sample was not attacked)
    l2: torch.Tensor
    queries: torch.Tensor  # per-sample model queries (NaN where not counted)
    seconds: float = 0.0
    forwards: float = 0.0  # total forward passes (images)
    backwards: float = 0.0

    @classmethod
    def empty(cls, eps: float, n: int) -> "EpsOutcome":
        nan = torch.full((n,), math.nan)
        false = torch.zeros(n, dtype=torch.bool)
        return cls(eps, false, false.clone(), nan, nan.clone(), nan.clone())


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


def _attack_rows(model, planned: PlannedAttack, x, y, task, masks: dict[float, torch.Tensor]):
    """Run ``planned`` on the masked rows of a batch; yields (eps, local row index, AttackOutput, adv logits)."""
    if planned.one_pass:
        union = torch.stack([masks[e] for e in planned.epsilons]).any(0)
        idx = union.nonzero().view(-1)
        if len(idx) == 0:
            return
        outputs = planned.attack(model, x[idx], y[idx], planned.epsilons, task)
        for out in outputs:
            yield out.eps, idx, out
        return
    for eps in planned.epsilons:
        idx = masks[eps].nonzero().view(-1)
        if len(idx) == 0:
            continue
        (out,) = planned.attack(model, x[idx], y[idx], [eps], task)
        yield eps, idx, out


def run_attacks(
    model: nn.Module,
    split: Split,
    plan: Sequence[PlannedAttack],
    batch_size: int,
    device: str,
    clean_correct: torch.Tensor,
    mode: str = "independent",
) -> list[AttackResult]:
    """Attack the split with every planned attack; per-sample outcomes per attack and epsilon."""
    if mode not in BATTERY_MODES:
        raise ValueError(f"unknown battery mode {mode!r}; choices: {', '.join(BATTERY_MODES)}")
    n = len(split)
    task = split.info.task
    results = [AttackResult(p.attack_id, p.attack.norm, clean_correct) for p in plan]
    for p, r in zip(plan, results):
        r.by_eps = {e: EpsOutcome.empty(e, n) for e in p.epsilons}
    bar = progress(range(0, n, batch_size), desc=f"attacks on {split.info.track}", unit="batch")
    for start in bar:
        stop = min(start + batch_size, n)
        rows = torch.arange(start, stop)
        cc = clean_correct[start:stop]
        x, y = split.images[rows].to(device), split.labels[rows].to(device)
        still_robust: dict[tuple[str, float], torch.Tensor] = {}
        for p, result in zip(plan, results):
            masks = {}
            for eps in p.epsilons:
                key = (p.attack.norm, eps)
                still_robust.setdefault(key, cc.clone())
                masks[eps] = still_robust[key] if mode == "sequential" else cc
            broken_now = {eps: torch.zeros_like(cc) for eps in p.epsilons}
            for eps, idx, out in _attack_rows(model, p, x, y, task, masks):
                with torch.no_grad():
                    adv_logits = model(out.x_adv)
                outcome = result.by_eps[eps]
                global_rows = rows[idx.cpu()]
                robust = task.correct(adv_logits, y[idx]).cpu()
                delta = (out.x_adv - x[idx]).float().cpu()
                outcome.robust[global_rows] = robust
                outcome.success[global_rows] = p.attack.last_criterion.is_adversarial(adv_logits).cpu()
                outcome.linf[global_rows] = flat_norm(delta, "linf")
                outcome.l2[global_rows] = flat_norm(delta, "l2")
                if out.queries is not None:
                    outcome.queries[global_rows] = out.queries.float().cpu()
                outcome.seconds += out.seconds
                outcome.forwards += out.forwards * len(idx)
                outcome.backwards += out.backwards * len(idx)
                broken_now[eps][idx.cpu()] = ~robust
            if mode == "sequential":
                for eps in p.epsilons:
                    key = (p.attack.norm, eps)
                    still_robust[key] = still_robust[key] & ~broken_now[eps]
                    outcome = result.by_eps[eps]
                    # the row after this attack: robust iff robust to it and to everything before it
                    outcome.robust[rows] = still_robust[key]
                    outcome.success[rows] = cc & ~still_robust[key]
    return results


def summary_row(result: AttackResult, outcome: EpsOutcome) -> dict[str, float | int | str]:
    cc = result.clean_correct
    n = int(cc.numel())
    return {
        "attack": result.attack_id,
        "norm": result.norm,
        "eps": outcome.eps,
        "n": n,
        "clean_acc": metrics.clean_acc(cc),
        "robust_acc": metrics.robust_acc(outcome.robust),
        "asr": metrics.attack_success_rate(cc, outcome.success),
        "linf_median": metrics.median_over_successes(outcome.linf, outcome.success),
        "l2_median": metrics.median_over_successes(outcome.l2, outcome.success),
        "queries_median": metrics.median_over_successes(outcome.queries, outcome.success & ~outcome.queries.isnan()),
        "forwards_per_sample": round(outcome.forwards / max(1, n), 2),
        "backwards_per_sample": round(outcome.backwards / max(1, n), 2),
        "seconds": round(outcome.seconds, 3),
    }


def worst_case(results: Sequence[AttackResult], battery_id: str) -> AttackResult:
    """Per-sample worst case over attacks of one norm: robust only if robust to all of them.

    Norms of a sample broken by several attacks are those of the smallest L2 perturbation.
    """
    first = results[0]
    combined = AttackResult(battery_id, first.norm, first.clean_correct)
    all_eps = sorted({e for r in results for e in r.by_eps})
    for eps in all_eps:
        outcomes = [r.by_eps[eps] for r in results if eps in r.by_eps]
        robust = torch.stack([o.robust for o in outcomes]).all(0)
        broken = torch.stack([~o.robust & first.clean_correct for o in outcomes])
        l2 = torch.stack([torch.where(b, o.l2, torch.full_like(o.l2, math.inf)) for b, o in zip(broken, outcomes)])
        pick = l2.argmin(0).view(1, -1)
        success = first.clean_correct & ~robust
        nan = torch.full_like(outcomes[0].linf, math.nan)
        combined.by_eps[eps] = EpsOutcome(
            eps, robust, success,
            torch.where(success, torch.stack([o.linf for o in outcomes]).gather(0, pick).view(-1), nan),
            torch.where(success, l2.gather(0, pick).view(-1), nan),
            torch.where(success, torch.stack([o.queries for o in outcomes]).gather(0, pick).view(-1), nan),
            sum(o.seconds for o in outcomes), sum(o.forwards for o in outcomes), sum(o.backwards for o in outcomes),
        )
    return combined
