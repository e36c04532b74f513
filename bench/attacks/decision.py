"""Decision-based black-box attacks from foolbox (HopSkipJump, Boundary) under a per-sample query budget.

foolbox queries every sample of a batch in lockstep (each model call holds
one candidate per sample), so a wrapper can count queries per sample, keep the
closest adversarial candidate each sample has been *seen* at (a decision-based
attacker only knows points it queried), and stop the attack the moment one
more call would exceed the budget. The result for epsilon e is that closest
queried adversarial point when its norm is <= e, else the clean input.
"""

from __future__ import annotations

import time

import foolbox as fb
import torch
import torch.nn as nn

from bench.attacks.base import Attack, AttackOutput
from bench.attacks.criteria import Criterion
from bench.attacks.foolbox_adapter import foolbox_criterion
from bench.attacks.registry import register_attack
from bench.attacks.threat import flat_norm
from bench.errors import ConfigError

DECISION_ATTACKS = {"HopSkipJumpAttack": {"linf": "linf", "l2": "l2"}, "BoundaryAttack": {"l2": "l2"}}


class _BudgetExhausted(Exception):
    pass


class QueryBudgetModel(nn.Module):
    """Counts queries per sample, remembers the closest adversarial point queried, stops at the budget."""

    def __init__(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, norm: str, budget: int):
        super().__init__()
        self.model, self.x, self.criterion, self.norm, self.budget = model, x, criterion, norm, budget
        self.queries = torch.zeros(len(x), dtype=torch.long)
        self.best = x.clone()
        self.best_norm = torch.full((len(x),), float("inf"))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[0] != len(self.x):
            raise RuntimeError(f"expected lockstep queries of {len(self.x)} samples, got a batch of {batch.shape[0]}")
        if int(self.queries.max()) + 1 > self.budget:
            raise _BudgetExhausted
        self.queries += 1
        logits = self.model(batch)
        with torch.no_grad():
            adv = self.criterion.is_adversarial(logits).cpu()
            size = flat_norm((batch - self.x).float(), self.norm).cpu()
            better = adv & (size < self.best_norm)
            self.best[better.to(batch.device)] = batch[better.to(batch.device)].detach()
            self.best_norm = torch.where(better, size, self.best_norm)
        return logits


@register_attack("decision")
class FoolboxDecisionAttack(Attack):
    """``params.attack``: HopSkipJumpAttack (L2, L-inf) or BoundaryAttack (L2); ``max_queries`` per sample."""

    kind = "decision"
    norms = ("linf", "l2")

    @classmethod
    def param_names(cls):
        return ("attack", "max_queries", "kwargs")

    def __init__(self, norm="l2", seed=0, **params):
        super().__init__(norm, seed, **params)
        name = str(params.get("attack", "HopSkipJumpAttack"))
        if name not in DECISION_ATTACKS:
            raise ConfigError(f"unknown decision-based attack {name!r}; choices: {', '.join(DECISION_ATTACKS)}.")
        if norm not in DECISION_ATTACKS[name]:
            raise ConfigError(f"{name} does not support norm {norm!r}; it supports: {', '.join(DECISION_ATTACKS[name])}.")
        self.max_queries = self._positive_int("max_queries", params.get("max_queries", 1000))
        kwargs = dict(params.get("kwargs") or {})
        if name == "HopSkipJumpAttack":
            kwargs.setdefault("constraint", "linf" if norm == "linf" else "l2")
        self.fb_attack = getattr(fb.attacks, name)(**kwargs)

    def run_epsilons(self, model, x, criterion, epsilons):
        if criterion.task.multi_label:
            raise ConfigError("foolbox's decision-based attacks assume one label per image; use square for multi-label tasks.")
        torch.manual_seed(self.seed)
        guard = QueryBudgetModel(model, x, criterion, self.norm, self.max_queries).eval()
        fmodel = fb.PyTorchModel(guard, bounds=(0, 1), device=x.device)
        fb_criterion = foolbox_criterion(criterion)
        started = time.perf_counter()
        try:
            self.fb_attack(fmodel, x, fb_criterion, epsilons=None)
        except _BudgetExhausted:
            pass
        except ValueError as exc:  # foolbox refuses when its random init finds no adversarial start
            if "init" not in str(exc) and "starting" not in str(exc):
                raise
        per_eps = (time.perf_counter() - started) / max(1, len(epsilons))
        outputs = []
        for eps in epsilons:
            inside = (guard.best_norm <= eps).to(x.device)
            x_adv = torch.where(inside.view(-1, *[1] * (x.dim() - 1)), guard.best, x)
            outputs.append(AttackOutput(eps, x_adv.detach(), per_eps, queries=guard.queries.clone()))
        return outputs
