"""Gradient attacks: FGSM, PGD (L-inf, L2) and MI-FGSM; batched, task-aware, best example kept."""

from __future__ import annotations

import torch
import torch.nn as nn

from bench.attacks.base import Attack, best_over_restarts
from bench.attacks.criteria import Criterion
from bench.attacks.registry import register_attack
from bench.attacks.threat import normalise_gradient, project, random_start
from bench.errors import ConfigError, unknown_choice


# The losses PGD climbs: cross-entropy (Madry et al.), or the CW margin, whose gradient does not vanish when the
# model is so confident that the softmax saturates in float32 (the cross-entropy's gradient is then exactly 0).
PGD_LOSSES = {"ce": Criterion.loss, "margin": Criterion.margin}


def loss_and_grad(model: nn.Module, x_adv: torch.Tensor, criterion: Criterion,
                  loss: str = "ce") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at ``x_adv`` and the gradient of the summed loss (``PGD_LOSSES``) with respect to it."""
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    (grad,) = torch.autograd.grad(PGD_LOSSES[loss](criterion, logits).sum(), x_adv)
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

    ``early_stop`` (default on) drops a sample from the batch at its first
    fooling iterate. Since that iterate is what is returned either way, the
    result is the full-step attack's; only the passes spent on samples already
    broken are saved. Off, every sample gets every step (fixed-cost timing).
    """

    norms = ("linf", "l2")

    @classmethod
    def param_names(cls):
        return ("steps", "rel_stepsize", "abs_stepsize", "random_start", "restarts", "momentum", "early_stop", "loss")

    def __init__(self, norm="linf", seed=0, **params):
        super().__init__(norm, seed, **params)
        self.steps = int(params.get("steps", 10))
        self.rel_stepsize = float(params.get("rel_stepsize", 0.25))
        self.abs_stepsize = params.get("abs_stepsize")
        self.random_start = bool(params.get("random_start", True))
        self.restarts = int(params.get("restarts", 1))
        self.momentum = float(params.get("momentum", 0.0))
        self.early_stop = bool(params.get("early_stop", True))
        self.loss = str(params.get("loss", "ce"))
        if self.loss not in PGD_LOSSES:
            raise unknown_choice("pgd loss", self.loss, PGD_LOSSES, "Set the attack's params.loss to one of them.")
        # Transfer attacks want the final surrogate iterate, not the first that fools the surrogate.
        self.keep_first_success = True
        if self.steps < 1 or self.restarts < 1:
            raise ConfigError(f"pgd needs steps >= 1 and restarts >= 1, got steps={self.steps}, restarts={self.restarts}.")

    def run(self, model, x, criterion, eps):
        step = float(self.abs_stepsize) if self.abs_stepsize is not None else self.rel_stepsize * eps
        generator = torch.Generator().manual_seed(self.seed)
        early_stop = self.early_stop and self.keep_first_success

        def single_run(xs: torch.Tensor, crit: Criterion) -> tuple[torch.Tensor, torch.Tensor]:
            delta = random_start(xs, eps, self.norm, generator) if self.random_start else torch.zeros_like(xs)
            run = _Trajectory(xs, (xs + delta).clamp(0, 1), crit)
            for _ in range(self.steps):
                logits, grad = loss_and_grad(model, run.x_adv, run.criterion, self.loss)
                kept = run.record(run.criterion.is_adversarial(logits), early_stop)
                if kept is not None:
                    grad = grad[kept]
                if not len(run.active):
                    break
                if self.momentum:
                    grad = grad / grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))
                    run.velocity = self.momentum * run.velocity + grad
                    grad = run.velocity
                x_next = run.x_adv + step * normalise_gradient(grad, self.norm)
                run.x_adv = (run.x + project(x_next - run.x, eps, self.norm)).clamp(0, 1)
            # Whether the last iterate fools changes nothing returned (an unfooled sample returns its last iterate
            # anyway), only which samples a further restart attacks: with one restart, that forward is skipped.
            if len(run.active) and self.restarts > 1:
                with torch.no_grad():
                    run.record(run.criterion.is_adversarial(model(run.x_adv)), early_stop)
            return run.result(self.keep_first_success)

        return best_over_restarts(x, criterion, self.restarts, single_run)


class _Trajectory:
    """One PGD run's state: the samples still stepping (``active``), their iterates, and what was found.

    ``record`` keeps each sample's first fooling iterate; with ``early_stop`` the
    fooled samples also leave the active set, so later passes skip them.
    """

    def __init__(self, xs: torch.Tensor, x_adv: torch.Tensor, criterion: Criterion):
        n = len(xs)
        self.active = torch.arange(n, device=xs.device)
        self.x, self.x_adv, self.criterion = xs, x_adv, criterion
        self.velocity = torch.zeros_like(xs)
        self.found = torch.zeros(n, dtype=torch.bool, device=xs.device)
        self.found_x = x_adv.clone()

    def record(self, fooled: torch.Tensor, early_stop: bool) -> torch.Tensor | None:
        """Note the active samples ``fooled`` now; returns the kept rows' mask if the active set shrank."""
        if not early_stop:  # the whole batch keeps stepping: masked writes, no host synchronisation
            newly = fooled & ~self.found
            self.found_x = torch.where(expand(newly, self.x_adv), self.x_adv, self.found_x)
            self.found = self.found | newly
            return None
        if not bool(fooled.any()):
            return None
        hit = self.active[fooled]
        self.found_x[hit], self.found[hit] = self.x_adv[fooled], True
        kept = ~fooled
        self.active, self.x, self.x_adv, self.velocity = (t[kept] for t in (self.active, self.x, self.x_adv, self.velocity))
        self.criterion = self.criterion.subset(kept.nonzero().view(-1))
        return kept

    def result(self, keep_first_success: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample: its first fooling iterate, else its last iterate; and whether it was fooled."""
        if not keep_first_success:
            return self.x_adv, torch.zeros_like(self.found)
        out = self.found_x.clone()
        out[self.active] = torch.where(expand(self.found[self.active], self.x_adv), out[self.active], self.x_adv)
        return out, self.found
