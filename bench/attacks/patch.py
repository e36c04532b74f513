"""The universal adversarial patch (Brown et al., 2017): learned on the train split, pasted on test images.

One patch per experiment: a square of side ``eps`` x image side, optimised
with Adam to maximise the criterion loss over training images at random (or
fixed) locations, then pasted on every attacked image. The threat model is
"patch": every changed pixel lies in one square of that side.
"""

from __future__ import annotations

import torch

from bench.attacks.base import Attack, AttackContext, attack_mode
from bench.attacks.criteria import Criterion
from bench.attacks.registry import register_attack
from bench.attacks.threat import patch_side
from bench.errors import ConfigError

LOCATIONS = ("random", "center", "top_left")


def paste(x: torch.Tensor, patch: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Paste ``patch`` (C, s, s) into each image at (rows[i], cols[i]); differentiable in the patch."""
    n, c, h, w = x.shape
    s = patch.shape[-1]
    canvas = torch.zeros_like(x)
    mask = torch.zeros((n, 1, h, w), device=x.device, dtype=x.dtype)
    for i in range(n):
        r, q = int(rows[i]), int(cols[i])
        canvas[i, :, r : r + s, q : q + s] = patch
        mask[i, :, r : r + s, q : q + s] = 1
    return x * (1 - mask) + canvas * mask


@register_attack("patch")
class UniversalPatch(Attack):
    kind = "patch"
    norms = ("patch",)

    @classmethod
    def param_names(cls):
        return ("location", "train_steps", "train_samples", "lr", "batch_size")

    def __init__(self, norm="patch", seed=0, **params):
        super().__init__(norm, seed, **params)
        self.location = str(params.get("location", "random"))
        if self.location not in LOCATIONS:
            raise ConfigError(f"unknown patch location {self.location!r}; choices: {', '.join(LOCATIONS)}.")
        self.train_steps = self._positive_int("train_steps", params.get("train_steps", 200))
        self.train_samples = self._positive_int("train_samples", params.get("train_samples", 512))
        self.batch_size = self._positive_int("batch_size", params.get("batch_size", 64))
        self.lr = float(params.get("lr", 0.05))
        self.patches: dict[float, torch.Tensor] = {}
        self._train = None

    def prepare(self, context: AttackContext) -> None:
        from bench.data import load_split

        info = context.dataset
        train = load_split(info.flag, "train", info.size, context.data_root)
        if len(train) > self.train_samples:
            train = load_split(info.flag, "train", info.size, context.data_root, n_examples=self.train_samples, seed=self.seed)
        self._train = train
        self.patches.clear()

    def _locations(self, n: int, side: int, h: int, w: int, generator: torch.Generator):
        if self.location == "center":
            return torch.full((n,), (h - side) // 2), torch.full((n,), (w - side) // 2)
        if self.location == "top_left":
            return torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
        return (torch.randint(0, h - side + 1, (n,), generator=generator),
                torch.randint(0, w - side + 1, (n,), generator=generator))

    def learn_patch(self, model, eps: float, task, device) -> torch.Tensor:
        """Adam on the patch pixels (kept in [0, 1]) over random train batches and locations."""
        if self._train is None:
            raise ConfigError("the patch attack learns on the train split: call prepare() first (the runner does).")
        images, labels = self._train.images, self._train.labels
        c, h, w = images.shape[1:]
        side = patch_side(eps, h)
        generator = torch.Generator().manual_seed(self.seed)
        patch = torch.rand((c, side, side), generator=generator).to(device).requires_grad_(True)
        optimiser = torch.optim.Adam([patch], lr=self.lr)
        with attack_mode(model), torch.enable_grad():
            for _ in range(self.train_steps):
                idx = torch.randint(0, len(images), (min(self.batch_size, len(images)),), generator=generator)
                x, y = images[idx].to(device), labels[idx].to(device)
                crit = self.criterion(model, x, y, task)
                rows, cols = self._locations(len(x), side, h, w, generator)
                loss = -crit.loss(model(paste(x, patch, rows, cols))).mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                with torch.no_grad():
                    patch.clamp_(0, 1)
        return patch.detach()

    def run(self, model, x, criterion: Criterion, eps):
        if eps not in self.patches:
            self.patches[eps] = self.learn_patch(model, eps, criterion.task, x.device)
        patch = self.patches[eps]
        generator = torch.Generator().manual_seed(self.seed + 1)
        rows, cols = self._locations(len(x), patch.shape[-1], x.shape[-2], x.shape[-1], generator)
        return paste(x, patch, rows, cols)
