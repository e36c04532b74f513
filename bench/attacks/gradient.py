"""Gradient attacks: FGSM, PGD (L-inf, L2) and MI-FGSM; batched, task-aware, best example kept."""

from __future__ import annotations

import torch
import torch.nn as nn

from bench.attacks.base import Attack, best_over_restarts
from bench.attacks.criteria import Criterion
from bench.attacks.registry import register_attack
from bench.attacks.threat import normalise_gradient, project, random_start
from bench.errors import ConfigError


def loss_and_grad(model: nn.Module, x_adv: torch.Tensor, criterion: Criterion) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at ``x_adv`` and the gradient of the summed criterion loss with respect to it."""
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    (grad,) = torch.autograd.grad(criterion.loss(logits).sum(), x_adv)
    return logits.detach(), grad


def expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *[1] * (like.dim() - 1))


@register_attack("fgsm")
class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow et al., 2015): one step of size eps."""

    norms = ("linf",)

    def run(self, model, x, criterion, eps):
        _, grad = loss_and_grad(model, x, criterion)
        return (x + eps * grad.sign()).clamp(0, 1)


@register_attack("pgd")
class PGD(Attack):
    """Projected Gradient Descent (Madry et al., 2018) for L-inf and L2; MI-FGSM with ``momentum`` > 0.

    Keeps, per sample, the first iterate that fools the model (not the last
    iterate), over ``restarts`` random starts. ``momentum`` = mu of MI-FGSM
    (Dong et al., 2018): gradients are L1-normalised and accumulated.
    """

    norms = ("linf", "l2")

    @classmethod
    def param_names(cls):
        return ("steps", "rel_stepsize", "abs_stepsize", "random_start", "restarts", "momentum")

    def __init__(self, norm="linf", seed=0, **params):
        super().__init__(norm, seed, **params)
        self.steps = int(params.get("steps", 10))
        self.rel_stepsize = float(params.get("rel_stepsize", 0.25))
        self.abs_stepsize = params.get("abs_stepsize")
        self.random_start = bool(params.get("random_start", True))
        self.restarts = int(params.get("restarts", 1))
        self.momentum = float(params.get("momentum", 0.0))
        # Transfer attacks want the final surrogate iterate, not the first that fools the surrogate.
        self.keep_first_success = True
        if self.steps < 1 or self.restarts < 1:
            raise ConfigError(f"pgd needs steps >= 1 and restarts >= 1, got steps={self.steps}, restarts={self.restarts}.")

    def run(self, model, x, criterion, eps):
        step = float(self.abs_stepsize) if self.abs_stepsize is not None else self.rel_stepsize * eps
        generator = torch.Generator().manual_seed(self.seed)

        def single_run(xs: torch.Tensor, crit: Criterion) -> tuple[torch.Tensor, torch.Tensor]:
            delta = random_start(xs, eps, self.norm, generator) if self.random_start else torch.zeros_like(xs)
            x_adv = (xs + delta).clamp(0, 1)
            found = torch.zeros(len(xs), dtype=torch.bool, device=x.device)
            found_x = x_adv.clone()
            velocity = torch.zeros_like(xs)
            for _ in range(self.steps):
                logits, grad = loss_and_grad(model, x_adv, crit)
                newly = crit.is_adversarial(logits) & ~found
                found_x[newly], found = x_adv[newly], found | newly
                if self.momentum:
                    grad = grad / grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))
                    velocity = self.momentum * velocity + grad
                    grad = velocity
                x_adv = x_adv + step * normalise_gradient(grad, self.norm)
                x_adv = (xs + project(x_adv - xs, eps, self.norm)).clamp(0, 1)
            with torch.no_grad():
                newly = crit.is_adversarial(model(x_adv)) & ~found
            found_x[newly], found = x_adv[newly], found | newly
            if not self.keep_first_success:
                found = torch.zeros_like(found)
            return torch.where(expand(found, xs), found_x, x_adv), found

        return best_over_restarts(x, criterion, self.restarts, single_run)
