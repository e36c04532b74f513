"""Auto-PGD (Croce & Hein, 2020): step-size-free PGD with momentum, for L-inf and L2.

APGD replaces PGD's fixed step with a budget-aware schedule: it starts at
2 * eps, and at checkpoints spread over the iterations halves the step of every
sample whose loss stopped rising (and restarts that sample from its best point).
The paper's losses are CE and DLR; ``margin`` (the criterion's CW margin) is
offered for tasks with fewer than the 4 classes DLR needs (binary MedMNIST).

Reference: F. Croce and M. Hein, "Reliable evaluation of adversarial robustness
with an ensemble of diverse parameter-free attacks", ICML 2020 (Algorithm 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from bench.attacks.base import Attack, best_over_restarts
from bench.attacks.criteria import Criterion
from bench.attacks.registry import register_attack
from bench.attacks.threat import normalise_gradient, project, random_start
from bench.errors import ConfigError, unknown_choice

APGD_LOSSES = ("ce", "margin", "dlr")
DLR_MIN_CLASSES = 4


def checkpoint_iterations(steps: int) -> list[int]:
    """Iterations w_j = ceil(p_j * steps) at which APGD may halve its step size.

    p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06): checks
    are sparse early (let the large step explore) and dense late (refine).
    """
    p = [0.0, 0.22]
    while True:
        following = p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)
        if following > 1:
            break
        p.append(following)
    # round() first: 0.41 * 100 is 41.000000000000004 in floats, which ceil would make 42.
    return sorted({math.ceil(round(pj * steps, 6)) for pj in p[1:]} - {0})


def dlr_loss(logits: torch.Tensor, criterion: Criterion) -> torch.Tensor:
    """Difference-of-logits-ratio loss (to increase): scale-invariant, so it resists saturated logits.

    Untargeted: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3); targeted:
    -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), with z_pi sorted descending.
    """
    ordered = logits.sort(1, descending=True).values
    y = criterion.labels.view(-1, 1)
    z_y = logits.gather(1, y).view(-1)
    if criterion.targeted:
        z_t = logits.gather(1, criterion.target.view(-1, 1)).view(-1)
        scale = ordered[:, 0] - (ordered[:, 2] + ordered[:, 3]) / 2 + 1e-12
        return -(z_y - z_t) / scale
    return -(z_y - Criterion._other_max(logits, y.view(-1))) / (ordered[:, 0] - ordered[:, 2] + 1e-12)


def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *[1] * (like.dim() - 1))


@register_attack("apgd")
class APGD(Attack):
    """APGD-CE / APGD-margin / APGD-DLR, L-inf and L2, untargeted or targeted.

    Per sample it returns the first iterate that fools the model or, when none
    does, the iterate of highest loss; a sample that is fooled is not updated
    again (early stop). Each of ``restarts`` random starts attacks only the
    samples not yet fooled.
    """

    norms = ("linf", "l2")

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        return ("steps", "loss", "restarts", "rho")

    def __init__(self, norm: str = "linf", seed: int = 0, **params: object):
        super().__init__(norm, seed, **params)
        self.steps = self._positive_int("apgd steps", params.get("steps", 100))
        self.restarts = self._positive_int("apgd restarts", params.get("restarts", 1))
        self.rho = float(params.get("rho", 0.75))  # type: ignore[arg-type]
        self.loss = str(params.get("loss", "ce"))
        if self.loss not in APGD_LOSSES:
            raise unknown_choice("apgd loss", self.loss, APGD_LOSSES, "Set the attack's params.loss to one of them.")
        if not 0 < self.rho <= 1:
            raise ConfigError(f"apgd rho must be in (0, 1], got {self.rho}; the paper uses 0.75.")

    # -- the loss ----------------------------------------------------------------
    def _check_loss_fits(self, criterion: Criterion, n_classes: int | None = None) -> None:
        """DLR is defined only for single-label tasks with at least 4 classes; say what to use instead."""
        if self.loss != "dlr":
            return
        if criterion.task.multi_label:
            raise ConfigError(
                "apgd loss 'dlr' is for single-label tasks; this task is multi-label. Use loss=ce or loss=margin."
            )
        if n_classes is not None and n_classes < DLR_MIN_CLASSES:
            raise ConfigError(
                f"apgd loss 'dlr' needs at least {DLR_MIN_CLASSES} classes, but the model has {n_classes}; "
                f"use loss=margin (the CW margin, fine for 2 or 3 classes) or loss=ce."
            )

    def _objective(self, logits: torch.Tensor, criterion: Criterion) -> torch.Tensor:
        """Per-sample loss APGD increases."""
        if self.loss == "ce":
            return criterion.loss(logits)
        if self.loss == "margin":
            return criterion.margin(logits)
        self._check_loss_fits(criterion, logits.shape[1])
        return dlr_loss(logits, criterion)

    def _evaluate(
        self, model: nn.Module, x_adv: torch.Tensor, criterion: Criterion, need_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Logits, per-sample loss and (if asked) its input gradient at ``x_adv``."""
        if not need_grad:
            with torch.no_grad():
                logits = model(x_adv)
                return logits, self._objective(logits, criterion), None
        x_adv = x_adv.detach().requires_grad_(True)
        logits = model(x_adv)
        loss = self._objective(logits, criterion)
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        return logits.detach(), loss.detach(), grad

    # -- the iteration -----------------------------------------------------------
    def _into_ball(self, x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> torch.Tensor:
        """Project onto the eps-ball around ``x``, then into [0, 1] (clamping never leaves the ball)."""
        return (x + project(x_adv - x, eps, self.norm)).clamp(0, 1)

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, eps: float) -> torch.Tensor:
        self._check_loss_fits(criterion)
        generator = torch.Generator().manual_seed(self.seed)
        return best_over_restarts(
            x, criterion, self.restarts, lambda xs, crit: self._single_run(model, xs, crit, eps, generator)
        )

    def _single_run(
        self, model: nn.Module, x: torch.Tensor, criterion: Criterion, eps: float, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One APGD run from a random start; returns the kept examples and which of them fool the model."""
        n = len(x)
        x_cur = self._into_ball(x, x + random_start(x, eps, self.norm, generator), eps)
        logits, loss_cur, grad_cur = self._evaluate(model, x_cur, criterion, need_grad=True)
        found = criterion.is_adversarial(logits)
        x_found = x_cur.clone()
        x_prev = x_cur.clone()
        x_best, loss_best, grad_best = x_cur.clone(), loss_cur.clone(), grad_cur.clone()
        step = torch.full((n,), 2.0 * eps, device=x.device)

        # Book-keeping between checkpoints: how often the loss rose, the best loss and
        # whether the step was halved at the previous checkpoint (conditions 1 and 2).
        rises = torch.zeros(n, device=x.device)
        loss_best_at_check = loss_best.clone()
        halved_at_check = torch.zeros(n, dtype=torch.bool, device=x.device)
        checks, last_check = set(checkpoint_iterations(self.steps)), 0

        for k in range(self.steps):
            active = (~found).nonzero().view(-1)
            if len(active) == 0:
                break
            xs, xa = x[active], x_cur[active]
            z = self._into_ball(xs, xa + _expand(step[active], xa) * normalise_gradient(grad_cur[active], self.norm), eps)
            alpha = 1.0 if k == 0 else 0.75  # the first step has no momentum to use
            x_next = self._into_ball(xs, xa + alpha * (z - xa) + (1 - alpha) * (xa - x_prev[active]), eps)
            x_prev[active], x_cur[active] = xa, x_next

            crit = criterion.subset(active)
            logits, loss, grad = self._evaluate(model, x_next, crit, need_grad=k < self.steps - 1)
            adv = crit.is_adversarial(logits)
            x_found[active[adv]] = x_next[adv]
            found[active[adv]] = True
            rises[active] += (loss > loss_cur[active]).float()
            loss_cur[active] = loss
            improved = loss > loss_best[active]
            better = active[improved]
            x_best[better], loss_best[better] = x_next[improved], loss[improved]
            if grad is not None:
                grad_cur[active] = grad
                grad_best[better] = grad[improved]

            if k + 1 in checks:
                too_few_rises = rises < self.rho * (k + 1 - last_check)  # condition 1
                stalled = ~halved_at_check & (loss_best <= loss_best_at_check)  # condition 2
                halve = (too_few_rises | stalled) & ~found
                step[halve] /= 2
                x_cur[halve], grad_cur[halve], loss_cur[halve] = x_best[halve], grad_best[halve], loss_best[halve]
                halved_at_check, loss_best_at_check = halve, loss_best.clone()
                rises.zero_()
                last_check = k + 1
        return torch.where(_expand(found, x), x_found, x_best), found
