"""Minimum-norm attacks: FMN, Carlini-Wagner L2 and DeepFool.

A minimum-norm attack looks, per sample, for the smallest adversarial
perturbation instead of the strongest one inside a fixed ball. One pass
therefore serves every epsilon: ``run_epsilons`` runs the attack once, keeps
the minimal example of each sample (after clamping it to [0, 1] and checking
once more that it fools the model) and, for each epsilon, returns it where its
norm is within epsilon and the clean input elsewhere. A sample fooled at one
epsilon is thus fooled at every larger one, by construction.

Every attack reads success from ``Criterion.margin`` (> 0 exactly when
adversarial), so untargeted, targeted and multi-label goals share one code path.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn as nn

from bench.attacks.base import Attack, AttackOutput
from bench.attacks.criteria import Criterion
from bench.attacks.registry import register_attack
from bench.attacks.threat import flat_norm, project, normalise_gradient
from bench.errors import ConfigError


def _view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample values shaped to broadcast over a batch of images."""
    return values.view(-1, *[1] * (like.dim() - 1))


def _dual_norm(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample dual norm of a gradient: L1 for L-inf, L2 for L2 (distance-to-boundary denominator)."""
    flat = grad.flatten(1)
    return flat.abs().sum(1) if norm == "linf" else flat.norm(p=2, dim=1)


def _project_each(delta: torch.Tensor, eps: torch.Tensor, norm: str) -> torch.Tensor:
    """Project every perturbation onto its own eps-ball (``eps`` has one radius per sample)."""
    radius = _view(eps, delta)
    if norm == "linf":
        return torch.maximum(torch.minimum(delta, radius), -radius)
    sizes = _view(flat_norm(delta, "l2").clamp_min(1e-12), delta)
    return delta * (radius / sizes).clamp(max=1.0)


def _cosine(start: float, end: float, step: int, steps: int) -> float:
    """Cosine annealing from ``start`` (step 0) towards ``end`` (step ``steps``)."""
    return end + (start - end) * (1 + math.cos(math.pi * step / steps)) / 2


class MinimumNormAttack(Attack):
    """Base class: subclasses implement ``minimise``; one pass is shared by every epsilon.

    After a call, ``last_norms`` holds each sample's minimal perturbation norm
    (0 for inputs already adversarial, inf where the attack failed).
    """

    kind = "minimum_norm"
    last_norms: torch.Tensor | None = None

    def minimise(self, model: nn.Module, x: torch.Tensor, criterion: Criterion) -> torch.Tensor:
        """Per sample, the smallest adversarial example found (any value where none was found)."""
        raise NotImplementedError

    def check_criterion(self, criterion: Criterion) -> None:
        """Refuse goals the attack cannot pursue, before any work (default: every goal is fine)."""

    def minimal_examples(self, model: nn.Module, x: torch.Tensor, criterion: Criterion) -> tuple[torch.Tensor, torch.Tensor]:
        """Clamped, re-checked minimal examples and a mask of the samples they fool.

        Inputs that already fool the model are kept as they are (norm 0) and
        not attacked; the rest go through ``minimise``, whose output is clamped
        to [0, 1] and kept only where the clamped example is still adversarial.
        """
        with torch.no_grad():
            fooled = criterion.is_adversarial(model(x))
        best = x.clone()
        todo = (~fooled).nonzero().view(-1)
        if len(todo):
            sub = criterion.subset(todo)
            found = self.minimise(model, x[todo], sub).detach().clamp(0, 1)
            with torch.no_grad():
                ok = sub.is_adversarial(model(found))
            best[todo[ok]] = found[ok]
            fooled[todo[ok]] = True
        return best, fooled

    def run_epsilons(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, epsilons: list[float]) -> list[AttackOutput]:
        """One attack pass; per epsilon, the minimal example where it fits in the ball.

        Where it does not fit, the minimal example projected onto the ball is
        kept if it still fools the model (as foolbox scores minimisation
        attacks), else the best smaller-epsilon result, else the clean input.
        Epsilons are visited in increasing order so success is monotone in eps.
        """
        self.check_criterion(criterion)
        started = time.perf_counter()
        best, fooled = self.minimal_examples(model, x, criterion)
        # The norm of the final (clamped) example is the one the threat-model check will measure.
        norms = flat_norm((best - x).float(), self.norm).masked_fill(~fooled, float("inf"))
        self.last_norms = norms
        results: dict[float, torch.Tensor] = {}
        carried, carried_ok = x.clone(), torch.zeros_like(fooled)
        for eps in sorted(set(epsilons)):
            fits = norms <= eps
            candidate = (x + project(best - x, eps, self.norm)).clamp(0, 1)
            try_projection = fooled & ~fits
            if try_projection.any():
                with torch.no_grad():
                    projected_ok = criterion.is_adversarial(model(candidate)) & try_projection
            else:
                projected_ok = torch.zeros_like(fooled)
            chosen = torch.where(_view(fits, x), best, torch.where(_view(projected_ok, x), candidate, carried))
            chosen_ok = fits | projected_ok | carried_ok
            results[eps] = chosen
            carried, carried_ok = chosen, chosen_ok
        seconds = (time.perf_counter() - started) / max(1, len(epsilons))
        return [AttackOutput(eps, results[eps], seconds) for eps in epsilons]


@register_attack("fmn")
class FMN(MinimumNormAttack):
    """Fast Minimum-Norm attack (Pintor et al., NeurIPS 2021), L-inf and L2.

    Gradient steps on the margin, projected onto a ball of adaptive radius:
    the radius shrinks by (1 - gamma) while the iterate is adversarial (never
    above the best norm found) and grows by (1 + gamma) while it is not; before
    the first success it jumps to the linearised distance to the boundary,
    enlarged by (1 + gamma): the paper's exact estimate lands a locally linear
    model on the boundary itself, where it can stay without ever crossing.
    Step size alpha and gamma are cosine-annealed (alpha to alpha_init / 100,
    gamma to 0.001). Starts from the clean input, so no boundary search is needed.
    ``alpha_init`` defaults to 1.0 for both norms, as in the authors' code: on
    BreastMNIST/PneumoniaMNIST models 10.0 (L-inf) left 1-4 points more robust accuracy.
    """

    norms = ("linf", "l2")

    @classmethod
    def param_names(cls):
        return ("steps", "alpha_init", "alpha_final", "gamma_init", "gamma_final")

    def __init__(self, norm: str = "linf", seed: int = 0, **params: object):
        super().__init__(norm, seed, **params)
        self.steps = self._positive_int("steps", params.get("steps", 100))
        self.alpha_init = float(params.get("alpha_init", 1.0))  # type: ignore[arg-type]
        self.alpha_final = float(params.get("alpha_final", self.alpha_init / 100))  # type: ignore[arg-type]
        self.gamma_init = float(params.get("gamma_init", 0.05))  # type: ignore[arg-type]
        self.gamma_final = float(params.get("gamma_final", 0.001))  # type: ignore[arg-type]
        if not (self.alpha_init > 0 and self.alpha_final > 0):
            raise ConfigError(f"fmn step sizes must be positive, got alpha_init={self.alpha_init}, alpha_final={self.alpha_final}.")
        if not (0 < self.gamma_final <= self.gamma_init < 1):
            raise ConfigError(
                f"fmn needs 0 < gamma_final <= gamma_init < 1, got gamma_init={self.gamma_init}, gamma_final={self.gamma_final}."
            )

    def minimise(self, model, x, criterion):
        n = len(x)
        delta = torch.zeros_like(x)
        radius = torch.full((n,), float("inf"), device=x.device)
        # No perturbation inside [0, 1] can be larger than this: a cap for the radius.
        worst = flat_norm(torch.maximum(x, 1 - x), self.norm)
        best_norm = torch.full((n,), float("inf"), device=x.device)
        best_delta = torch.zeros_like(x)
        found = torch.zeros(n, dtype=torch.bool, device=x.device)

        def record(logits: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
            nonlocal best_norm, best_delta, found
            adv = criterion.is_adversarial(logits)
            size = flat_norm(delta, self.norm)
            better = adv & (size < best_norm)
            best_norm = torch.where(better, size, best_norm)
            best_delta = torch.where(_view(better, x), delta, best_delta)
            found = found | adv
            return adv

        for step in range(self.steps):
            alpha = _cosine(self.alpha_init, self.alpha_final, step, self.steps)
            gamma = _cosine(self.gamma_init, self.gamma_final, step, self.steps)
            delta = delta.detach().requires_grad_(True)
            logits = model(x + delta)
            margin = criterion.margin(logits)
            (grad,) = torch.autograd.grad(margin.sum(), delta)
            delta, margin, logits = delta.detach(), margin.detach(), logits.detach()
            adv = record(logits, delta)
            size = flat_norm(delta, self.norm)
            to_boundary = margin.abs() / _dual_norm(grad, self.norm).clamp_min(1e-12)
            radius = torch.where(
                adv,
                torch.minimum(radius * (1 - gamma), best_norm),
                torch.where(found, radius * (1 + gamma), (size + to_boundary) * (1 + gamma)),
            )
            radius = torch.minimum(radius, worst)
            # The paper's step: the L2-normalised gradient for every norm; the projection does the rest.
            delta = delta + alpha * normalise_gradient(grad, "l2")
            delta = _project_each(delta, radius, self.norm)
            delta = (x + delta).clamp(0, 1) - x
        with torch.no_grad():
            record(model(x + delta), delta)
        return x + best_delta


@register_attack("cw")
class CarliniWagnerL2(MinimumNormAttack):
    """Carlini & Wagner L2 attack (IEEE S&P 2017).

    Minimises ||x' - x||_2^2 + c * max(confidence - margin, 0) with Adam over
    tanh-space variables (x' = (tanh(w) + 1) / 2 stays in [0, 1] without
    clipping). c is binary-searched per sample: halved towards the smallest c
    that succeeded, multiplied by 10 while none has. Keeps, per sample, the
    smallest adversarial example seen over every step and every c.
    """

    norms = ("l2",)

    @classmethod
    def param_names(cls):
        return ("steps", "binary_search_steps", "initial_const", "confidence", "lr", "abort_early")

    def __init__(self, norm: str = "l2", seed: int = 0, **params: object):
        super().__init__(norm, seed, **params)
        self.steps = self._positive_int("steps", params.get("steps", 100))
        self.binary_search_steps = self._positive_int("binary_search_steps", params.get("binary_search_steps", 9))
        self.initial_const = float(params.get("initial_const", 1e-3))  # type: ignore[arg-type]
        self.confidence = float(params.get("confidence", 0.0))  # type: ignore[arg-type]
        self.lr = float(params.get("lr", 0.01))  # type: ignore[arg-type]
        self.abort_early = bool(params.get("abort_early", True))
        if not (self.initial_const > 0 and self.lr > 0 and self.confidence >= 0):
            raise ConfigError(
                f"cw needs initial_const > 0, lr > 0 and confidence >= 0, got initial_const={self.initial_const}, "
                f"lr={self.lr}, confidence={self.confidence}."
            )

    def minimise(self, model, x, criterion):
        n = len(x)
        # Shrink by 1e-6 so that pixels at exactly 0 or 1 have a finite arctanh.
        w_clean = torch.atanh((2 * x - 1) * (1 - 1e-6))
        const = torch.full((n,), self.initial_const, device=x.device)
        lower = torch.zeros(n, device=x.device)
        upper = torch.full((n,), float("inf"), device=x.device)
        best = x.clone()
        best_norm = torch.full((n,), float("inf"), device=x.device)
        check_every = max(1, math.ceil(self.steps / 10))

        for _ in range(self.binary_search_steps):
            w = w_clean.clone().requires_grad_(True)
            optimiser = torch.optim.Adam([w], lr=self.lr)
            succeeded = torch.zeros(n, dtype=torch.bool, device=x.device)
            previous = float("inf")
            for step in range(self.steps):
                x_adv = (torch.tanh(w) + 1) / 2
                logits = model(x_adv)
                margin = criterion.margin(logits)
                squared = (x_adv - x).flatten(1).pow(2).sum(1)
                loss = squared + const * (self.confidence - margin).clamp_min(0)
                (w.grad,) = torch.autograd.grad(loss.sum(), w)
                optimiser.step()

                with torch.no_grad():
                    adv = criterion.is_adversarial(logits) & (margin >= self.confidence)
                    size = squared.sqrt()
                    better = adv & (size < best_norm)
                    best = torch.where(_view(better, x), x_adv, best)
                    best_norm = torch.where(better, size, best_norm)
                    succeeded |= adv
                # As Carlini & Wagner: stop this c early once the total loss stops falling.
                if self.abort_early and step % check_every == 0:
                    total = float(loss.detach().sum())
                    if total > 0.9999 * previous:
                        break
                    previous = total
            upper = torch.where(succeeded, torch.minimum(upper, const), upper)
            lower = torch.where(succeeded, lower, torch.maximum(lower, const))
            const = torch.where(torch.isinf(upper), const * 10, (lower + upper) / 2)
        return best


@register_attack("deepfool")
class DeepFool(MinimumNormAttack):
    """DeepFool (Moosavi-Dezfooli et al., CVPR 2016), L2 and L-inf, untargeted only.

    Each step linearises the decision boundaries nearest the input and steps
    exactly onto the closest one (plus 1e-4); the accumulated perturbation is
    scaled by (1 + overshoot). Boundaries: single-label tasks, the top
    ``candidates - 1`` other classes of the clean logits (the single other class
    for binary tasks); multi-label tasks, the ``candidates - 1`` labels closest
    to flipping (each label is its own binary boundary, as in the margin).
    """

    norms = ("l2", "linf")
    supports_targeted = False

    @classmethod
    def param_names(cls):
        return ("steps", "overshoot", "candidates")

    def __init__(self, norm: str = "l2", seed: int = 0, **params: object):
        super().__init__(norm, seed, **params)
        self.steps = self._positive_int("steps", params.get("steps", 50))
        self.overshoot = float(params.get("overshoot", 0.02))  # type: ignore[arg-type]
        self.candidates = self._positive_int("candidates", params.get("candidates", 10))
        if self.candidates < 2:
            raise ConfigError(f"deepfool needs candidates >= 2 (the true class and at least one other), got {self.candidates}.")
        if self.overshoot < 0:
            raise ConfigError(f"deepfool overshoot must be >= 0, got {self.overshoot}.")

    @staticmethod
    def _boundaries(logits: torch.Tensor, criterion: Criterion, picks: torch.Tensor) -> torch.Tensor:
        """(N, K) signed functions, each < 0 on the correct side of one boundary and > 0 past it."""
        if criterion.task.multi_label:
            flipped = -(2 * criterion.labels.float() - 1) * logits
            return flipped.gather(1, picks)
        own = logits.gather(1, criterion.labels.view(-1, 1))
        return logits.gather(1, picks) - own

    def _pick(self, logits: torch.Tensor, criterion: Criterion) -> torch.Tensor:
        """The boundaries to linearise, chosen once from the clean logits."""
        if criterion.task.multi_label:
            closeness = -(2 * criterion.labels.float() - 1) * logits
            return closeness.topk(min(self.candidates - 1, logits.shape[1]), dim=1).indices
        others = logits.scatter(1, criterion.labels.view(-1, 1), float("-inf"))
        return others.topk(min(self.candidates - 1, logits.shape[1] - 1), dim=1).indices

    def check_criterion(self, criterion):
        if criterion.targeted:
            raise ConfigError("deepfool has no targeted variant; use fmn or cw for targeted minimum-norm attacks.")

    def minimise(self, model, x, criterion):
        with torch.no_grad():
            picks = self._pick(model(x), criterion)
        total = torch.zeros_like(x)
        x_adv = x.clone()
        active = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.steps):
            idx = active.nonzero().view(-1)
            if len(idx) == 0:
                break
            xs = x_adv[idx].requires_grad_(True)
            sub = criterion.subset(idx)
            logits = model(xs)
            done = sub.is_adversarial(logits.detach())
            values = self._boundaries(logits, sub, picks[idx])
            grads = torch.stack(
                [
                    torch.autograd.grad(values[:, k].sum(), xs, retain_graph=k < values.shape[1] - 1)[0]
                    for k in range(values.shape[1])
                ],
                1,
            )  # (n, K, *image)
            values = values.detach()
            dual = grads.flatten(2).abs().sum(2) if self.norm == "linf" else grads.flatten(2).norm(p=2, dim=2)
            distance = values.abs() / (dual + 1e-8)
            nearest = distance.argmin(1)
            rows = torch.arange(len(idx), device=x.device)
            grad = grads[rows, nearest]
            # A step of linearised length (distance + 1e-4) in the steepest direction for the norm.
            step = _view(distance[rows, nearest] + 1e-4, grad) * normalise_gradient(grad, self.norm)
            move = idx[~done]
            total[move] += step[~done]
            x_adv[move] = (x[move] + (1 + self.overshoot) * total[move]).clamp(0, 1)
            active[idx[done]] = False
        return x_adv
