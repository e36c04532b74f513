"""Adversarial patches (Brown et al., 2017; Finlayson et al., 2019): one patch per experiment, pasted on test images.

The patch is a square of side ``eps`` x image side, optionally cut to the disk
inscribed in it (``shape: circle``) and rotated at random within
+-``rotation`` degrees wherever it is pasted, in training and at test time
(expectation over transformations). Its content is either learned with Adam
on the train split to maximise the criterion loss (``source: learned``; a
targeted patch is learned per target class, on the train images sent to that
class, and each test image gets the patch of its own target: with the
``opposite`` rule one patch could not send both classes across), or a
natural photograph of the same size (``source: natural``, the control that
tells an adversarial patch from mere occlusion). A learned patch is white-box
when learned on the attacked model, black-box when learned on an independently
trained ``surrogate``: the attacked model is then never queried.

The threat model is "patch": every changed pixel lies in one square of that
side (rotation happens inside the square, so a rotated patch never leaves it).
Patches are 2D: batches of volumes (N, C, D, H, W) are refused with an error
that lists the attacks that accept them.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from bench.attacks.base import Attack, AttackContext, attack_mode
from bench.attacks.criteria import Criterion
from bench.attacks.registry import register_attack
from bench.attacks.threat import patch_side, require_2d
from bench.errors import ConfigError

LOCATIONS = ("random", "center", "top_left")
SHAPES = ("square", "circle")
SOURCES = ("learned", "natural")
# The natural control image: a photograph bundled with scikit-image (no download), Chelsea the cat.
NATURAL_IMAGE = "chelsea"


def shape_mask(shape: str, side: int) -> torch.Tensor:
    """(1, 1, side, side) mask: all ones, or the disk inscribed in the square (pixel centres inside)."""
    if shape == "square":
        return torch.ones(1, 1, side, side)
    centre = (side - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    inside = (yy - centre) ** 2 + (xx - centre) ** 2 <= (side / 2) ** 2
    return inside.float().view(1, 1, side, side)


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each (C, s, s) image about its centre by its angle; corners rotated in are zero. Differentiable."""
    theta = degrees * math.pi / 180
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    affine = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(affine.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def paste(x: torch.Tensor, patches: torch.Tensor, masks: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Blend patch i (C, s, s) through mask i (1, s, s) into image i at (rows[i], cols[i]); differentiable in the patch."""
    n = x.shape[0]
    s = patches.shape[-1]
    canvas = torch.zeros_like(x)
    alpha = torch.zeros_like(x[:, :1])
    for i in range(n):
        r, q = int(rows[i]), int(cols[i])
        canvas[i, :, r : r + s, q : q + s] = patches[i] * masks[i]
        alpha[i, :, r : r + s, q : q + s] = masks[i]
    # a convex combination, so in [0, 1] up to rounding (1 - a) * x + a * p can exceed 1 by an ulp
    return (x * (1 - alpha) + canvas).clamp_(0, 1)


@lru_cache(maxsize=8)
def _natural_photo(channels: int, side: int) -> torch.Tensor:
    from skimage import data

    photo = torch.from_numpy(np.asarray(getattr(data, NATURAL_IMAGE)(), dtype=np.float32) / 255.0).permute(2, 0, 1)
    h, w = photo.shape[1:]
    crop = min(h, w)
    photo = photo[:, (h - crop) // 2 : (h - crop) // 2 + crop, (w - crop) // 2 : (w - crop) // 2 + crop]
    if channels == 1:
        photo = (photo * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    elif channels != 3:
        raise ConfigError(f"a natural patch needs 1- or 3-channel images, got {channels} channels.")
    return F.interpolate(photo[None], size=(side, side), mode="area")[0].clamp(0, 1)


def natural_patch(channels: int, side: int) -> torch.Tensor:
    """A centre crop of a bundled photograph, resized to (channels, side, side); grey for 1-channel data."""
    return _natural_photo(channels, side).clone()


@register_attack("patch")
class AdversarialPatch(Attack):
    kind = "patch"
    norms = ("patch",)
    volumes = False  # a square pasted on an image plane, learned with 2D rotations: no volumetric meaning

    @classmethod
    def param_names(cls):
        return ("location", "shape", "rotation", "source", "train_steps", "train_samples", "lr", "batch_size",
                "surrogate", "surrogate_seed", "surrogate_checkpoint")

    def __init__(self, norm="patch", seed=0, **params):
        super().__init__(norm, seed, **params)
        self.location = self._choice("location", params.get("location", "random"), LOCATIONS)
        self.shape = self._choice("shape", params.get("shape", "square"), SHAPES)
        self.source = self._choice("source", params.get("source", "learned"), SOURCES)
        self.rotation = float(params.get("rotation", 0.0))
        if not 0 <= self.rotation <= 180:
            raise ConfigError(f"patch rotation {self.rotation} must be a maximum angle in degrees in [0, 180], e.g. 22.5.")
        self.train_steps = self._positive_int("train_steps", params.get("train_steps", 200))
        self.train_samples = self._positive_int("train_samples", params.get("train_samples", 512))
        self.batch_size = self._positive_int("batch_size", params.get("batch_size", 64))
        self.lr = float(params.get("lr", 0.05))
        self.surrogate_name = params.get("surrogate")
        self.surrogate_seed = int(params.get("surrogate_seed", 1))
        self.surrogate_checkpoint = params.get("surrogate_checkpoint")
        if self.source == "natural" and (self.surrogate_name or self.surrogate_checkpoint):
            raise ConfigError("a natural patch is not learned, so it takes no surrogate; remove params.surrogate.")
        self.surrogate: torch.nn.Module | None = None
        self.patches: dict[float, dict[int | None, torch.Tensor]] = {}  # eps -> target class (None: any) -> patch
        self._train = None

    @staticmethod
    def _choice(name: str, value: object, choices: tuple[str, ...]) -> str:
        if str(value) not in choices:
            raise ConfigError(f"unknown patch {name} {value!r}; choices: {', '.join(choices)}.")
        return str(value)

    @property
    def black_box(self) -> bool:
        """Learned on a surrogate: the attacked model is never queried while crafting."""
        return self.surrogate_name is not None or self.surrogate_checkpoint is not None

    def prepare(self, context: AttackContext) -> None:
        from bench.attacks.transfer import resolve_surrogate
        from bench.data import load_split

        self.patches.clear()
        if self.source == "natural":
            return
        info = context.dataset
        train = load_split(info.flag, "train", info.size, context.data_root)
        if len(train) > self.train_samples:
            train = load_split(info.flag, "train", info.size, context.data_root, n_examples=self.train_samples, seed=self.seed)
        require_2d(train.images.shape, "the patch attack")  # before any surrogate is trained for nothing
        self._train = train
        if self.black_box:
            model, self.surrogate_card = resolve_surrogate(context, self.surrogate_name or "resnet18_native",
                                                           self.surrogate_seed, self.surrogate_checkpoint)
            self.surrogate = model.to(context.device).eval()

    def _placements(self, n: int, side: int, h: int, w: int, generator: torch.Generator):
        """Rows, columns and rotation angles (degrees) for ``n`` pastes."""
        if self.location == "center":
            rows, cols = torch.full((n,), (h - side) // 2), torch.full((n,), (w - side) // 2)
        elif self.location == "top_left":
            rows, cols = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
        else:
            rows = torch.randint(0, h - side + 1, (n,), generator=generator)
            cols = torch.randint(0, w - side + 1, (n,), generator=generator)
        angles = (torch.rand(n, generator=generator) * 2 - 1) * self.rotation
        return rows, cols, angles

    def apply(self, x: torch.Tensor, patch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Paste ``patch`` (C, s, s), or one patch per image (N, C, s, s), at placements drawn from ``generator``."""
        require_2d(x.shape, "the patch attack")
        n, _, h, w = x.shape
        side = patch.shape[-1]
        rows, cols, angles = self._placements(n, side, h, w, generator)
        patches = patch.unsqueeze(0).expand(n, *patch.shape) if patch.dim() == 3 else patch
        masks = shape_mask(self.shape, side).to(x).expand(n, 1, side, side)
        if self.rotation:
            angles = angles.to(x)
            patches, masks = rotate(patches, angles), rotate(masks, angles)
        return paste(x, patches, masks, rows, cols)

    def learn_patch(self, model, eps: float, task, device) -> dict[int | None, torch.Tensor]:
        """Adam on the patch pixels (kept in [0, 1]) over random train batches and placements: one patch, or,
        for a single-label targeted attack, one per target class from the train images sent to it."""
        if self._train is None:
            raise ConfigError("the patch attack learns on the train split: call prepare() first (the runner does).")
        images, labels = self._train.images, self._train.labels
        with attack_mode(model):
            crit = self.criterion(model, images.to(device), labels.to(device), task)
        if crit.targeted and crit.target is not None and crit.target.dim() == 1:
            targets = crit.target.cpu()
            return {int(c): self._learn_one(model, eps, images, crit, (targets == c).nonzero().view(-1))
                    for c in targets.unique().tolist()}
        return {None: self._learn_one(model, eps, images, crit, torch.arange(len(images)))}

    def _learn_one(self, model, eps: float, images: torch.Tensor, crit: Criterion, pool: torch.Tensor) -> torch.Tensor:
        c = images.shape[1]
        device = crit.labels.device
        side = patch_side(eps, images.shape)
        generator = torch.Generator().manual_seed(self.seed)
        patch = torch.rand((c, side, side), generator=generator).to(device).requires_grad_(True)
        optimiser = torch.optim.Adam([patch], lr=self.lr)
        with attack_mode(model), torch.enable_grad():
            for _ in range(self.train_steps):
                idx = pool[torch.randint(0, len(pool), (min(self.batch_size, len(pool)),), generator=generator)]
                x = images[idx].to(device)
                loss = -crit.subset(idx.to(device)).loss(model(self.apply(x, patch, generator))).mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                with torch.no_grad():
                    patch.clamp_(0, 1)
        return patch.detach()

    def make_patches(self, model, eps: float, x: torch.Tensor, task) -> dict[int | None, torch.Tensor]:
        if self.source == "natural":
            return {None: natural_patch(x.shape[1], patch_side(eps, x.shape)).to(x)}
        if self.black_box:
            if self.surrogate is None:
                raise ConfigError("the black-box patch has no surrogate: call prepare() (the experiment runner does).")
            model = self.surrogate
        return self.learn_patch(model, eps, task, x.device)

    def run(self, model, x, criterion: Criterion, eps):
        if eps not in self.patches:
            self.patches[eps] = self.make_patches(model, eps, x, criterion.task)
        patches = self.patches[eps]
        if None in patches:
            patch = patches[None]
        else:  # each image gets the patch of its target class
            wanted = [int(t) for t in criterion.target.view(-1).tolist()]
            missing = sorted(set(wanted) - set(patches))
            if missing:
                raise ConfigError(f"no train image was sent to class(es) {missing} by the target rule "
                                  f"{self.target_rule!r}, so the patch has none for them; raise train_samples.")
            patch = torch.stack([patches[t] for t in wanted])
        generator = torch.Generator().manual_seed(self.seed + 1)
        return self.apply(x, patch, generator)
