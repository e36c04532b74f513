"""Square attack (Andriushchenko et al., 2020): score-based black-box random search, L-inf and L2.

Each query changes one random square window of the current best perturbation
and keeps the change only if the objective improves. The window's area is a
fraction p of the image that halves on a fixed schedule. The attack sees
nothing but logits: no gradients, no model internals, run under no_grad.

Queries are counted per sample: the evaluation of the initial perturbation is
1 query, every later model call on a sample is 1 more, and a sample stops being
queried once it is adversarial or has used ``max_queries``.

Reference: M. Andriushchenko, F. Croce, N. Flammarion and M. Hein, "Square
Attack: a query-efficient black-box adversarial attack via random search",
ECCV 2020 (Algorithms 1-3).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from bench.attacks.base import Attack
from bench.attacks.criteria import Criterion
from bench.attacks.registry import register_attack
from bench.attacks.threat import flat_norm, project
from bench.errors import ConfigError, unknown_choice

SQUARE_LOSSES = ("margin", "ce")
# Iterations (out of 10,000, rescaled to the budget) after which p is halved again.
P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(p_init: float, iteration: int, n_iters: int) -> float:
    """Fraction of pixels the square covers at ``iteration``: p_init halved at each boundary passed."""
    progress = int(iteration / n_iters * 10000)
    return p_init / 2 ** sum(progress > boundary for boundary in P_HALVINGS)


def _rand_signs(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.randint(0, 2, shape, generator=generator) * 2 - 1).float().to(device)


def _rand_corners(n: int, h: int, w: int, s: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample top-left corners of an s x s window inside an h x w image."""
    return torch.randint(0, h - s + 1, (n,), generator=generator), torch.randint(0, w - s + 1, (n,), generator=generator)


def _window_mask(rows: torch.Tensor, cols: torch.Tensor, s: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """(n, 1, h, w) bool: True inside each sample's s x s window."""
    r = torch.arange(h).view(1, h, 1)
    c = torch.arange(w).view(1, 1, w)
    rows, cols = rows.view(-1, 1, 1), cols.view(-1, 1, 1)
    inside = (r >= rows) & (r < rows + s) & (c >= cols) & (c < cols + s)
    return inside.unsqueeze(1).to(device)


def _place(patterns: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Put each sample's (k, s, s) pattern at its window, zeros elsewhere: (n, k, h, w)."""
    n, k, s, _ = patterns.shape
    full = torch.zeros(n, k, h, w, dtype=patterns.dtype, device=patterns.device)
    ar = torch.arange(s, device=patterns.device)
    r = (rows.to(patterns.device).view(n, 1, 1, 1) + ar.view(1, 1, s, 1)).expand(n, k, s, s)
    c = (cols.to(patterns.device).view(n, 1, 1, 1) + ar.view(1, 1, 1, s)).expand(n, k, s, s)
    i = torch.arange(n, device=patterns.device).view(n, 1, 1, 1).expand(n, k, s, s)
    j = torch.arange(k, device=patterns.device).view(1, k, 1, 1).expand(n, k, s, s)
    full[i, j, r, c] = patterns
    return full


def centred_rectangle(height: int, width: int) -> torch.Tensor:
    """The paper's pseudo-Gaussian bump: sum_{k >= d} 1/(k+1)^2 at Chebyshev distance d from the centre, unit L2."""
    ci, cj = height // 2, width // 2
    rings = max(ci, cj) + 1
    tail = torch.tensor([1.0 / (k + 1) ** 2 for k in range(rings)]).flip(0).cumsum(0).flip(0)
    dist = torch.maximum(
        (torch.arange(height) - ci).abs().view(-1, 1), (torch.arange(width) - cj).abs().view(1, -1)
    )
    bump = torch.where(dist < rings, tail[dist.clamp(max=rings - 1)], torch.zeros(()))
    return bump / bump.norm().clamp_min(1e-12)


def l2_square_pattern(s: int) -> torch.Tensor:
    """An s x s unit-L2 pattern: a bump of one sign on the top half, the opposite sign below (Alg. 3's eta)."""
    top = s // 2
    pattern = torch.zeros(s, s)
    if top:
        pattern[:top] = centred_rectangle(top, s)
    pattern[top:] = -centred_rectangle(s - top, s)
    return pattern / pattern.norm().clamp_min(1e-12)


def _patterns(n: int, channels: int, s: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, channels, s, s): the L2 pattern, transposed for a random half of the samples, random sign per channel."""
    base = l2_square_pattern(s)
    flip = torch.rand(n, generator=generator) < 0.5
    shapes = torch.where(flip.view(n, 1, 1), base.t().expand(n, s, s), base.expand(n, s, s))
    return (shapes.unsqueeze(1).to(device) * _rand_signs((n, channels, 1, 1), generator, device)).contiguous()


@register_attack("square")
class Square(Attack):
    """Square attack, untargeted or targeted, for L-inf and L2, with a per-sample query budget.

    ``loss``: "margin" (the criterion's CW margin) or "ce" (the criterion's
    cross-entropy); either way success is the criterion's. ``restarts`` > 1
    splits ``max_queries`` between restarts, so no sample ever uses more than
    ``max_queries``.
    """

    norms = ("linf", "l2")
    kind = "score"

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        return ("max_queries", "p_init", "loss", "restarts")

    def __init__(self, norm: str = "linf", seed: int = 0, **params: object):
        super().__init__(norm, seed, **params)
        max_queries = int(params.get("max_queries", 5000))  # type: ignore[arg-type]
        if max_queries <= 0:
            raise ConfigError(f"square max_queries must be a positive number of queries per sample, got {max_queries}.")
        self.max_queries = max_queries
        self.p_init = float(params.get("p_init", 0.8))  # type: ignore[arg-type]
        if not 0 < self.p_init <= 1:
            raise ConfigError(f"square p_init is a fraction of the image in (0, 1], got {self.p_init}; the paper uses 0.8.")
        self.loss = str(params.get("loss", "margin"))
        if self.loss not in SQUARE_LOSSES:
            raise unknown_choice("square loss", self.loss, SQUARE_LOSSES, "Set the attack's params.loss to one of them.")
        self.restarts = self._positive_int("square restarts", params.get("restarts", 1))
        if self.restarts > self.max_queries:
            raise ConfigError(
                f"square restarts ({self.restarts}) share max_queries ({self.max_queries}); use at most one restart per query."
            )

    def _objective(self, logits: torch.Tensor, criterion: Criterion) -> torch.Tensor:
        """Per-sample score to increase."""
        return criterion.margin(logits) if self.loss == "margin" else criterion.loss(logits)

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, eps: float) -> torch.Tensor:
        queries = torch.zeros(len(x), dtype=torch.long)
        self._last_queries = queries
        if eps == 0 or len(x) == 0:
            return x.clone()  # nothing to search: the only point is x itself, no query spent
        generator = torch.Generator().manual_seed(self.seed)
        budgets = [self.max_queries // self.restarts] * self.restarts
        budgets[-1] += self.max_queries - sum(budgets)
        best = x.clone()
        best_score = torch.full((len(x),), -math.inf, device=x.device)
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        with torch.no_grad():
            for budget in budgets:
                todo = (~fooled).nonzero().view(-1)
                if len(todo) == 0:
                    break
                x_adv, score, found, used = self._single_run(model, x[todo], criterion.subset(todo), eps, budget, generator)
                keep = found | (score > best_score[todo])
                best[todo[keep]], best_score[todo[keep]] = x_adv[keep], score[keep]
                fooled[todo] = found
                queries[todo.cpu()] += used
        return best

    def _single_run(
        self, model: nn.Module, x: torch.Tensor, criterion: Criterion, eps: float, budget: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random search from the paper's initialisation; returns best examples, scores, success, queries used."""
        x_best = self._initial(x, eps, generator)
        logits = model(x_best)
        used = torch.ones(len(x), dtype=torch.long)
        score = self._objective(logits, criterion)
        found = criterion.is_adversarial(logits)
        for iteration in range(budget - 1):
            active = (~found).nonzero().view(-1)
            if len(active) == 0:
                break
            p = p_schedule(self.p_init, iteration, budget)
            propose = self._propose_linf if self.norm == "linf" else self._propose_l2
            x_new = propose(x[active], x_best[active], eps, p, generator)
            crit = criterion.subset(active)
            logits = model(x_new)
            used[active.cpu()] += 1
            new_score = self._objective(logits, crit)
            adv = crit.is_adversarial(logits)
            accept = adv | (new_score > score[active])
            x_best[active[accept]], score[active[accept]] = x_new[accept], new_score[accept]
            found[active[adv]] = True
        return x_best, score, found, used

    # -- initialisation ----------------------------------------------------------
    def _initial(self, x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
        if self.norm == "linf":
            # Vertical stripes: one random sign per (sample, channel, column), the same down each column.
            n, c, _, w = x.shape
            return (x + eps * _rand_signs((n, c, 1, w), generator, x.device)).clamp(0, 1)
        return self._initial_l2(x, eps, generator)

    def _initial_l2(self, x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
        """A centred 5 x 5 grid of the L2 pattern, random signs, scaled to norm eps (the paper's L2 init).

        Images under 5 pixels a side have no room for the grid and start from a
        random Gaussian direction instead.
        """
        n, c, h, w = x.shape
        s = min(h, w) // 5
        if s == 0:
            delta = torch.randn(x.shape, generator=generator).to(x.device)
        else:
            delta = torch.zeros_like(x)
            top, left = (h - 5 * s) // 2, (w - 5 * s) // 2
            for i in range(5):
                for j in range(5):
                    rows = torch.full((n,), top + i * s, dtype=torch.long)
                    cols = torch.full((n,), left + j * s, dtype=torch.long)
                    delta += _place(_patterns(n, c, s, generator, x.device), rows, cols, h, w)
        return self._scaled(x, delta, eps)

    def _scaled(self, x: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
        """x + delta rescaled to L2 norm eps, projected (for float round-off) and kept in [0, 1]."""
        norms = flat_norm(delta, "l2").clamp_min(1e-12).view(-1, 1, 1, 1)
        return (x + project(delta * (eps / norms), eps, "l2")).clamp(0, 1)

    # -- proposals ---------------------------------------------------------------
    def _propose_linf(self, x: torch.Tensor, x_best: torch.Tensor, eps: float, p: float, generator: torch.Generator) -> torch.Tensor:
        """Set one random s x s window (area ~ p of the image) to x +- eps, one sign per channel (Alg. 2)."""
        n, c, h, w = x.shape
        s = min(max(int(round(math.sqrt(p * h * w))), 1), min(h, w) - 1) if min(h, w) > 1 else 1
        rows, cols = _rand_corners(n, h, w, s, generator)
        window = _window_mask(rows, cols, s, h, w, x.device)
        signs = _rand_signs((n, c, 1, 1), generator, x.device)
        candidate = torch.where(window, (x + eps * signs).clamp(0, 1), x_best)
        # A window that already holds these values would waste a query: draw again, then flip the
        # signs of any still unchanged (flipping always changes the window when eps > 0).
        same = (candidate == x_best).flatten(1).all(1)
        if same.any():
            signs[same] = _rand_signs((int(same.sum()), c, 1, 1), generator, x.device)
            candidate = torch.where(window, (x + eps * signs).clamp(0, 1), x_best)
            same = (candidate == x_best).flatten(1).all(1)
            signs[same] = -signs[same]
            candidate = torch.where(window, (x + eps * signs).clamp(0, 1), x_best)
        return candidate

    def _propose_l2(self, x: torch.Tensor, x_best: torch.Tensor, eps: float, p: float, generator: torch.Generator) -> torch.Tensor:
        """Alg. 3: move the perturbation mass of windows W1 and W2 into W1, with a fresh pattern added in W1.

        Per channel, W1 gets the old W1 direction plus a new random-sign pattern,
        rescaled to hold W1's and W2's old mass plus an equal share of the unused
        budget; W2 outside W1 is zeroed; the result is rescaled to norm eps.
        """
        n, c, h, w = x.shape
        s = max(int(round(math.sqrt(p * h * w))), 3)
        s = min(s + 1 if s % 2 == 0 else s, min(h, w))
        delta = x_best - x
        rows1, cols1 = _rand_corners(n, h, w, s, generator)
        rows2, cols2 = _rand_corners(n, h, w, s, generator)
        w1 = _window_mask(rows1, cols1, s, h, w, x.device)
        w2 = _window_mask(rows2, cols2, s, h, w, x.device)

        def channel_norm(t: torch.Tensor) -> torch.Tensor:
            return t.pow(2).sum((2, 3), keepdim=True).sqrt()

        old_w1 = delta * w1
        mass = channel_norm(delta * (w1 | w2))
        spare = (eps**2 - flat_norm(delta, "l2").pow(2)).clamp_min(0).view(-1, 1, 1, 1) / c
        fresh = _place(_patterns(n, c, s, generator, x.device), rows1, cols1, h, w) + old_w1 / (channel_norm(old_w1) + 1e-10)
        fresh = fresh / channel_norm(fresh).clamp_min(1e-12) * (spare + mass.pow(2)).sqrt()
        new_delta = torch.where(w1, fresh, torch.where(w2, torch.zeros_like(delta), delta))
        return self._scaled(x, new_delta, eps)
