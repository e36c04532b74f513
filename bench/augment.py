"""Batched train-time augmentations on [0, 1] tensors, chosen by name (``train.augment``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench.errors import unknown_choice

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _none(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return x


def _flip_shift(x: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to ``pad`` pixels (reflect padding); volumes too."""
    if x.dim() == 5:
        return _flip_shift_volume(x, generator, pad)
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy.view(-1, 1) + torch.arange(h)).to(x.device)
    cols = (dx.view(-1, 1) + torch.arange(w)).to(x.device)
    idx = torch.arange(n, device=x.device).view(-1, 1, 1)
    return padded.permute(0, 2, 3, 1)[idx, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2).contiguous()


def _flip_shift_volume(x: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """The volume version: a random left-right flip (last axis) and a shift of up to ``pad`` voxels along each
    of the three axes (reflect padding), independently per sample."""
    n, _, d, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1, 1).to(x.device), x.flip(-1), x)
    padded = F.pad(x, (pad,) * 6, mode="reflect")
    shifts = torch.randint(0, 2 * pad + 1, (n, 3), generator=generator).tolist()
    return torch.stack([padded[i, :, a:a + d, b:b + h, c:c + w] for i, (a, b, c) in enumerate(shifts)])


AUGMENTS: dict[str, Augment] = {"none": _none, "flip_shift": _flip_shift}


def get_augment(name: str) -> Augment:
    if name not in AUGMENTS:
        raise unknown_choice("augmentation", name, AUGMENTS, "Set train.augment to one of them.")
    return AUGMENTS[name]
