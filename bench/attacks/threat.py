"""Threat models: norms, projections, random starts, and the check run on every batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bench.errors import ConfigError, ThreatModelViolation, unknown_choice

NORMS = ("linf", "l2")
# "patch": eps is the side of a square patch as a fraction of the image side (2D images only).
# Every other threat model measures norms over all non-batch dims, so it holds for volumes (NCDHW) as is.
THREAT_MODELS = NORMS + ("patch",)
# float32 rounding of x + delta, then clamping, can overshoot the ball by a few ulps.
LINF_TOL = 1e-6
L2_RTOL = 1e-5


def flat_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample norm of a batch of perturbations: 'linf', 'l2' or 'l0'."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "l0":
        return (flat != 0).sum(1).float()
    raise unknown_choice("norm", norm, ("linf", "l2", "l0"))


def validate_eps(eps: float, norm: str) -> None:
    """Refuse epsilons that make no sense for the threat model before any work is done."""
    if norm not in THREAT_MODELS:
        raise unknown_choice("norm", norm, THREAT_MODELS)
    if norm == "patch" and not 0 < eps <= 1:
        raise ConfigError(f"patch size {eps} must be a fraction of the image side in (0, 1], e.g. 0.1.")
    if not eps >= 0:
        raise ConfigError(f"epsilon {eps} is negative (or NaN); epsilons must be >= 0.")
    if norm == "linf" and eps > 1:
        raise ConfigError(
            f"L-inf epsilon {eps} is above 1, but images are in [0, 1]; "
            f"write 8/255 as '8/255' (or 0.0314), not 8."
        )


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project a batch of perturbations onto the eps-ball of ``norm``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    norms = flat_norm(delta, "l2").clamp_min(1e-12).view(-1, *([1] * (delta.dim() - 1)))
    return delta * (eps / norms).clamp(max=1.0)


def random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly random point of the eps-ball (L-inf) or of the L2 ball's volume."""
    if norm == "linf":
        noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
        return (2 * noise - 1) * eps
    direction = torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
    direction = direction / flat_norm(direction, "l2").clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
    dims = x[0].numel()
    radius = torch.rand(x.shape[0], generator=generator, device="cpu").to(x.device) ** (1.0 / dims)
    return direction * (eps * radius).view(-1, *([1] * (x.dim() - 1)))


def normalise_gradient(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit size: sign for L-inf, grad/||grad|| for L2."""
    if norm == "linf":
        return grad.sign()
    return grad / flat_norm(grad, "l2").clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))


def check_threat_model(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str, attack: str = "") -> None:
    """Raise ThreatModelViolation if any example leaves [0, 1] or the eps-ball. Never clips."""
    if x_adv.shape != x.shape:
        raise ThreatModelViolation(f"{attack}: adversarial batch has shape {tuple(x_adv.shape)}, inputs {tuple(x.shape)}.")
    if not torch.isfinite(x_adv).all():
        raise ThreatModelViolation(f"{attack}: adversarial examples contain NaN or inf.")
    lo, hi = float(x_adv.min()), float(x_adv.max())
    if lo < 0 or hi > 1:
        raise ThreatModelViolation(f"{attack}: adversarial examples leave [0, 1] (min {lo:.6g}, max {hi:.6g}).")
    if norm == "patch":
        _check_patch(x, x_adv, eps, attack)
        return
    sizes = flat_norm((x_adv - x).float(), norm)
    limit = eps + LINF_TOL if norm == "linf" else eps * (1 + L2_RTOL) + 1e-7
    worst = float(sizes.max()) if sizes.numel() else 0.0
    if worst > limit:
        raise ThreatModelViolation(
            f"{attack}: a perturbation has {norm} norm {worst:.8g} > eps {eps:.8g} "
            f"({int((sizes > limit).sum())} of {sizes.numel()} samples)."
        )


def require_2d(shape: Sequence[int], what: str) -> None:
    """Refuse anything but a batch of 2D images (N, C, H, W), for what is defined on an image plane (patches).

    A batch of volumes (N, C, D, H, W) gets the list of attacks that do accept volumes.
    """
    if len(shape) == 4:
        return
    if len(shape) == 5:
        from bench.attacks.registry import volume_attacks  # here: the registry imports this module

        raise ConfigError(
            f"{what} is 2D-only: it needs image batches shaped (N, C, H, W), but got inputs of shape {tuple(shape)}, "
            f"a batch of volumes (N, C, D, H, W). Attacks that work on volumes: {', '.join(volume_attacks())}; "
            f"use one of them (e.g. attack=pgd) for a 3D dataset, or a 2D dataset for {what}."
        )
    raise ConfigError(f"{what} needs image batches shaped (N, C, H, W), but got inputs of shape {tuple(shape)}.")


def patch_side(eps: float, height: int | Sequence[int]) -> int:
    """Side in pixels of a patch covering ``eps`` of the image side (at least one pixel).

    ``height`` is the image height, or a batch's shape: checked to be 2D (patches are squares on an image plane).
    """
    if isinstance(height, Sequence):
        require_2d(height, "the patch threat model")
        height = height[-2]
    return max(1, int(round(eps * height)))


def _check_patch(x: torch.Tensor, x_adv: torch.Tensor, eps: float, attack: str) -> None:
    """Every changed pixel of a sample lies inside one square of the allowed side."""
    side = patch_side(eps, x.shape)
    changed = (x_adv != x).any(1)  # (N, H, W)
    for i in range(len(x)):
        where = changed[i].nonzero()
        if len(where) == 0:
            continue
        extent = where.amax(0) - where.amin(0) + 1
        if int(extent.max()) > side:
            raise ThreatModelViolation(
                f"{attack}: sample {i} is changed over a {int(extent[0])}x{int(extent[1])} region, "
                f"larger than the {side}x{side} patch allowed by eps={eps}."
            )
