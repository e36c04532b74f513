"""Square attack (Andriushchenko et al., 2020): score-based black-box random search, L-inf and L2.

Each query changes one random square window of the current best perturbation
and keeps the change only if the objective improves. The window's area is a
fraction p of the image that halves on a fixed schedule. The attack sees
nothing but logits: no gradients, no model internals, run under no_grad.

Volumes (N, C, D, H, W) get the same search in three dims: the window is a
cube of side s with s^3 ~ p * D*H*W (images keep the paper's s^2 ~ p * H*W)
at a random corner per sample; the L-inf init's vertical stripes become
planes, one random sign per column constant over depth and height; the L2
pattern's pseudo-Gaussian bumps use the Chebyshev distance over three dims
(``centred_box``) and its two halves split the cube along a random axis; the
L2 init tiles a 5 x 5 x 5 grid. Image batches take exactly the code path and
random draws they always had.

Queries are counted per sample: the evaluation of the initial perturbation is
1 query, every later model call on a sample is 1 more, and a sample stops being
queried once it is adversarial or has used ``max_queries``.

Reference: M. Andriushchenko, F. Croce, N. Flammarion and M. Hein, "Square
Attack: a query-efficient black-box adversarial attack via random search",
ECCV 2020 (Algorithms 1-3).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

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


def spatial_shape(x: torch.Tensor) -> tuple[int, ...]:
    """(H, W) of an image batch or (D, H, W) of a volume batch; the attack's windows live in these dims."""
    if x.dim() not in (4, 5):
        raise ConfigError(
            f"square needs images (N, C, H, W) or volumes (N, C, D, H, W), got inputs of shape {tuple(x.shape)}."
        )
    return tuple(x.shape[2:])


def _root_side(p: float, spatial: Sequence[int]) -> int:
    """round(side) of a window holding a fraction p of the pixels: s^2 ~ p*H*W (images), s^3 ~ p*D*H*W (volumes)."""
    pixels = p
    for size in spatial:  # left to right, so images get exactly the float p * h * w they always had
        pixels *= size
    return int(round(math.sqrt(pixels) if len(spatial) == 2 else math.cbrt(pixels)))


def linf_window_side(p: float, spatial: Sequence[int]) -> int:
    """Side of Alg. 2's window (square, or cube for volumes): ~p of the pixels, >= 1, under the shortest side."""
    shortest = min(spatial)
    return min(max(_root_side(p, spatial), 1), shortest - 1) if shortest > 1 else 1


def l2_window_side(p: float, spatial: Sequence[int]) -> int:
    """Side of Alg. 3's windows: ~p of the pixels, odd (the bump has a centre), >= 3, at most the shortest side."""
    s = max(_root_side(p, spatial), 3)
    return min(s + 1 if s % 2 == 0 else s, min(spatial))


def _rand_corners(n: int, spatial: Sequence[int], s: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Per-sample first corners of an s-sided window, one tensor per spatial dim (rows, then columns for images)."""
    return tuple(torch.randint(0, size - s + 1, (n,), generator=generator) for size in spatial)


def _window_mask(corners: Sequence[torch.Tensor], s: int, spatial: Sequence[int], device: torch.device) -> torch.Tensor:
    """(n, 1, *spatial) bool: True inside each sample's window of side s."""
    k = len(spatial)
    inside = torch.ones((), dtype=torch.bool)
    for axis, (size, start) in enumerate(zip(spatial, corners)):
        at = torch.arange(size).view(*[size if d == axis else 1 for d in range(k)]).unsqueeze(0)
        start = start.view(-1, *[1] * k)
        inside = inside & (at >= start) & (at < start + s)
    return inside.unsqueeze(1).to(device)


def _place(patterns: torch.Tensor, corners: Sequence[torch.Tensor], spatial: Sequence[int]) -> torch.Tensor:
    """Put each sample's (k, s, ..., s) pattern at its window, zeros elsewhere: (n, k, *spatial)."""
    n, k, s = patterns.shape[0], patterns.shape[1], patterns.shape[-1]
    dims, device = len(spatial), patterns.device
    shape = (n, k) + (s,) * dims
    full = torch.zeros(n, k, *spatial, dtype=patterns.dtype, device=device)
    ar = torch.arange(s, device=device)
    index = [
        torch.arange(n, device=device).view(n, 1, *[1] * dims).expand(shape),
        torch.arange(k, device=device).view(1, k, *[1] * dims).expand(shape),
    ]
    for axis, start in enumerate(corners):
        offsets = ar.view(1, 1, *[s if d == axis else 1 for d in range(dims)])
        index.append((start.to(device).view(n, 1, *[1] * dims) + offsets).expand(shape))
    full[tuple(index)] = patterns
    return full


def centred_box(*sides: int) -> torch.Tensor:
    """The paper's pseudo-Gaussian bump on a box of any rank, unit L2.

    Value sum_{k >= d} 1/(k+1)^2 at Chebyshev distance d from the centre pixel
    (side // 2 on every axis), d = max over axes of |i - centre|: rings of
    constant value are square outlines in 2D (the paper's) and cube shells in 3D.
    """
    centres = [side // 2 for side in sides]
    rings = max(centres) + 1
    tail = torch.tensor([1.0 / (k + 1) ** 2 for k in range(rings)]).flip(0).cumsum(0).flip(0)
    dist = None
    for axis, (side, centre) in enumerate(zip(sides, centres)):
        d = (torch.arange(side) - centre).abs().view(*[side if a == axis else 1 for a in range(len(sides))])
        dist = d if dist is None else torch.maximum(dist, d)
    bump = torch.where(dist < rings, tail[dist.clamp(max=rings - 1)], torch.zeros(()))
    return bump / bump.norm().clamp_min(1e-12)


def centred_rectangle(height: int, width: int) -> torch.Tensor:
    """The 2D bump of ``centred_box``: the paper's pseudo-Gaussian rectangle."""
    return centred_box(height, width)


def l2_window_pattern(s: int, dims: int = 2) -> torch.Tensor:
    """An s^dims unit-L2 pattern: a bump of one sign on the first half along axis 0, the opposite sign on the rest.

    In 2D this is Alg. 3's eta (top half vs bottom half); in 3D the cube is split
    into a front and a back half along depth, each half a 3D bump.
    """
    top = s // 2
    pattern = torch.zeros((s,) * dims)
    if top:
        pattern[:top] = centred_box(top, *(s,) * (dims - 1))
    pattern[top:] = -centred_box(s - top, *(s,) * (dims - 1))
    return pattern / pattern.norm().clamp_min(1e-12)


def l2_square_pattern(s: int) -> torch.Tensor:
    """An s x s unit-L2 pattern: a bump of one sign on the top half, the opposite sign below (Alg. 3's eta)."""
    return l2_window_pattern(s, 2)


def _patterns(
    n: int, channels: int, s: int, generator: torch.Generator, device: torch.device, dims: int = 2
) -> torch.Tensor:
    """(n, channels, s, ..., s): the L2 pattern in a random orientation per sample, random sign per channel.

    Images: transposed for a random half of the samples (split top/bottom or
    left/right). Volumes: the split axis is drawn uniformly from the three.
    """
    base = l2_window_pattern(s, dims)
    if dims == 2:
        flip = torch.rand(n, generator=generator) < 0.5
        shapes = torch.where(flip.view(n, 1, 1), base.t().expand(n, s, s), base.expand(n, s, s))
    else:
        axis = torch.randint(0, dims, (n,), generator=generator)
        shapes = torch.stack([base.transpose(0, a) for a in range(dims)])[axis]
    signs = _rand_signs((n, channels) + (1,) * dims, generator, device)
    return (shapes.unsqueeze(1).to(device) * signs).contiguous()


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
            # Stripes: one random sign per (sample, channel, column), the same along every other axis
            # (vertical stripes on images; on volumes, planes constant over depth and height).
            spatial_shape(x)
            n, c, w = x.shape[0], x.shape[1], x.shape[-1]
            return (x + eps * _rand_signs((n, c, *[1] * (x.dim() - 3), w), generator, x.device)).clamp(0, 1)
        return self._initial_l2(x, eps, generator)

    def _initial_l2(self, x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
        """A centred grid of 5 x 5 (images) or 5 x 5 x 5 (volumes) L2 patterns, random signs, scaled to norm eps.

        That is the paper's L2 init; inputs under 5 pixels a side have no room
        for the grid and start from a random Gaussian direction instead.
        """
        spatial = spatial_shape(x)
        n, c = x.shape[:2]
        s = min(spatial) // 5
        if s == 0:
            delta = torch.randn(x.shape, generator=generator).to(x.device)
        else:
            delta = torch.zeros_like(x)
            firsts = [(size - 5 * s) // 2 for size in spatial]
            for tile in itertools.product(range(5), repeat=len(spatial)):  # rows outer, columns inner
                corners = tuple(torch.full((n,), first + i * s, dtype=torch.long) for first, i in zip(firsts, tile))
                delta += _place(_patterns(n, c, s, generator, x.device, len(spatial)), corners, spatial)
        return self._scaled(x, delta, eps)

    def _scaled(self, x: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
        """x + delta rescaled to L2 norm eps, projected (for float round-off) and kept in [0, 1]."""
        norms = flat_norm(delta, "l2").clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        return (x + project(delta * (eps / norms), eps, "l2")).clamp(0, 1)

    # -- proposals ---------------------------------------------------------------
    def _propose_linf(self, x: torch.Tensor, x_best: torch.Tensor, eps: float, p: float, generator: torch.Generator) -> torch.Tensor:
        """Set one random window (square, or cube for volumes; ~p of the pixels) to x +- eps, a sign per channel (Alg. 2)."""
        spatial = spatial_shape(x)
        n, c = x.shape[:2]
        s = linf_window_side(p, spatial)
        corners = _rand_corners(n, spatial, s, generator)
        window = _window_mask(corners, s, spatial, x.device)
        sign_shape = (n, c) + (1,) * len(spatial)
        signs = _rand_signs(sign_shape, generator, x.device)
        candidate = torch.where(window, (x + eps * signs).clamp(0, 1), x_best)
        # A window that already holds these values would waste a query: draw again, then flip the
        # signs of any still unchanged (flipping always changes the window when eps > 0).
        same = (candidate == x_best).flatten(1).all(1)
        if same.any():
            signs[same] = _rand_signs((int(same.sum()),) + sign_shape[1:], generator, x.device)
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
        Windows are squares on images and cubes on volumes.
        """
        spatial = spatial_shape(x)
        n, c = x.shape[:2]
        s = l2_window_side(p, spatial)
        delta = x_best - x
        corners1 = _rand_corners(n, spatial, s, generator)
        corners2 = _rand_corners(n, spatial, s, generator)
        w1 = _window_mask(corners1, s, spatial, x.device)
        w2 = _window_mask(corners2, s, spatial, x.device)
        pixel_dims = tuple(range(2, x.dim()))

        def channel_norm(t: torch.Tensor) -> torch.Tensor:
            return t.pow(2).sum(pixel_dims, keepdim=True).sqrt()

        old_w1 = delta * w1
        mass = channel_norm(delta * (w1 | w2))
        spare = (eps**2 - flat_norm(delta, "l2").pow(2)).clamp_min(0).view(-1, *[1] * (x.dim() - 1)) / c
        fresh = _place(_patterns(n, c, s, generator, x.device, len(spatial)), corners1, spatial)
        fresh = fresh + old_w1 / (channel_norm(old_w1) + 1e-10)
        fresh = fresh / channel_norm(fresh).clamp_min(1e-12) * (spare + mass.pow(2)).sqrt()
        new_delta = torch.where(w1, fresh, torch.where(w2, torch.zeros_like(delta), delta))
        return self._scaled(x, new_delta, eps)
