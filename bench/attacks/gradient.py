"""Gradient attacks: FGSM and PGD (L-inf and L2), batched, task-aware, best example kept."""

from __future__ import annotations

import torch
import torch.nn as nn

from bench.attacks.base import Attack
from bench.attacks.registry import register_attack
from bench.attacks.threat import normalise_gradient, project, random_start
from bench.errors import ConfigError
from bench.tasks import Task


def loss_and_grad(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at ``x_adv`` and the gradient of the summed task loss with respect to it."""
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    loss = task.loss(logits, y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x_adv)
    return logits.detach(), grad


@register_attack("fgsm")
class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow et al., 2015): one step of size eps."""

    norms = ("linf",)

    def run(self, model, x, y, eps, task):
        _, grad = loss_and_grad(model, x, task.labels_as_targets(y), task)
        return (x + eps * grad.sign()).clamp(0, 1)


@register_attack("pgd")
class PGD(Attack):
    """Projected Gradient Descent (Madry et al., 2018) for L-inf and L2.

    Keeps, per sample, the first iterate that fools the model (not the last
    iterate), over ``restarts`` random starts.
    """

    norms = ("linf", "l2")

    @classmethod
    def param_names(cls):
        return ("steps", "rel_stepsize", "abs_stepsize", "random_start", "restarts")

    def __init__(self, norm="linf", seed=0, **params):
        super().__init__(norm, seed, **params)
        self.steps = int(params.get("steps", 10))
        self.rel_stepsize = float(params.get("rel_stepsize", 0.25))
        self.abs_stepsize = params.get("abs_stepsize")
        self.random_start = bool(params.get("random_start", True))
        self.restarts = int(params.get("restarts", 1))
        if self.steps < 1 or self.restarts < 1:
            raise ConfigError(f"pgd needs steps >= 1 and restarts >= 1, got steps={self.steps}, restarts={self.restarts}.")

    def run(self, model, x, y, eps, task):
        targets = task.labels_as_targets(y)
        step = float(self.abs_stepsize) if self.abs_stepsize is not None else self.rel_stepsize * eps
        generator = torch.Generator().manual_seed(self.seed)
        best = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            todo = ~fooled
            if not todo.any():
                break
            xs, ts = x[todo], targets[todo]
            delta = random_start(xs, eps, self.norm, generator) if self.random_start else torch.zeros_like(xs)
            x_adv = (xs + delta).clamp(0, 1)
            found = torch.zeros(len(xs), dtype=torch.bool, device=x.device)
            found_x = x_adv.clone()
            for _ in range(self.steps):
                logits, grad = loss_and_grad(model, x_adv, ts, task)
                newly = ~task.correct(logits, ts) & ~found
                found_x[newly], found = x_adv[newly], found | newly
                x_adv = x_adv + step * normalise_gradient(grad, self.norm)
                x_adv = (xs + project(x_adv - xs, eps, self.norm)).clamp(0, 1)
            with torch.no_grad():
                newly = ~task.correct(model(x_adv), ts) & ~found
            found_x[newly], found = x_adv[newly], found | newly
            result = torch.where(found.view(-1, *[1] * (x.dim() - 1)), found_x, x_adv)
            best[todo] = result
            fooled[todo] = found
        return best
