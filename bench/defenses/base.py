"""The Defense interface: a wrapper around a classifier that declares what it is.

A defense takes inputs in [0, 1] and returns logits, like every classifier. It
may transform inputs (JPEG, bit-depth reduction, median filtering), randomise
inference (randomised smoothing), or be nothing but a robustly trained
checkpoint (PGD-AT, TRADES). Its *declaration* says which, and the declaration,
not the person evaluating it, decides the adaptive attacks
(``bench/defenses/adaptive.py``):

- ``differentiable=False``: the transform's gradient is useless (zero, or no
  graph at all), so attacks also run through a BPDA view (Athalye et al.
  2018): the transform in the forward pass, an approximation's gradient in the
  backward pass: the identity's (``gradient="straight_through"``, the
  default) or a differentiable *surrogate* the defense provides
  (``gradient="surrogate"``, e.g. a differentiable JPEG), which is the better
  approximation where the identity is a poor one;
- ``randomised=True``: attacks also run on an *expectation over
  transformation* view (EoT, at least 20 draws per gradient), and the model-form
  check (compiled vs eager logits) cannot apply, so such models run eagerly;
- ``trained``: the training method that made the checkpoint (``pgd_at``,
  ``trades``, ``gaussian_noise``); the undefended backbone of the same recipe
  and seed is the transfer source.

A declaration can only add attacks, never remove the standard battery.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch
import torch.nn as nn

from bench.errors import ConfigError

GRADIENTS = ("exact", "straight_through", "surrogate")


@dataclass(frozen=True)
class Declaration:
    """What a defense is; decides its adaptive attacks and the checks that apply to it."""

    randomised: bool = False
    differentiable: bool = True
    gradient: str = "exact"  # exact | straight_through | surrogate: how BPDA gets a gradient through the transform
    transforms_input: bool = False
    trained: str | None = None  # pgd_at | trades | gaussian_noise: how its checkpoint was trained
    needs_labels: bool = False  # a defense must never see labels at inference (refused if true)
    input_range: tuple[float, float] = (0.0, 1.0)  # the threat model's box; anything else is refused

    def __post_init__(self) -> None:
        if self.gradient not in GRADIENTS:
            raise ConfigError(f"defense gradient {self.gradient!r} is not one of {', '.join(GRADIENTS)}; "
                              "use straight_through (BPDA) for a non-differentiable transform, or surrogate when "
                              "the defense implements a differentiable approximation of it (Defense.surrogate).")
        if not self.differentiable and self.gradient == "exact":
            object.__setattr__(self, "gradient", "straight_through")  # the default approximation

    def summary(self) -> str:
        parts = ["randomised" if self.randomised else "deterministic",
                 "differentiable" if self.differentiable else f"non-differentiable ({self.gradient})"]
        if self.transforms_input:
            parts.append("input transform")
        if self.trained:
            parts.append(f"trained with {self.trained}")
        return ", ".join(parts)

    def as_dict(self) -> dict:
        return {**asdict(self), "input_range": list(self.input_range)}


class Defense(nn.Module):
    """Base class: ``forward(x) = classify(transform(x))``; subclasses override one or both.

    ``transform`` returns the transformed input; a non-differentiable transform
    computes it however it likes (no autograd graph needed): in the plain view
    its output is connected to ``x`` with a zero gradient, which is exactly what
    a naive gradient attack sees. ``straight_through`` (the BPDA view) swaps in
    the gradient of the declared approximation: the identity's, or
    ``surrogate(x)``'s when the declaration says ``gradient="surrogate"``. Randomised defenses draw noise from ``self.rng()``: the
    global generator normally, a freshly seeded one per call in the
    fixed-randomness view (a deterministic function that must be breakable).
    """

    name: ClassVar[str] = "defense"
    declaration: ClassVar[Declaration] = Declaration()
    PARAMS: ClassVar[Mapping[str, object]] = {}  # parameter -> default

    def __init__(self, model: nn.Module, **params: object):
        super().__init__()
        unknown = set(params) - set(self.PARAMS)
        if unknown:
            raise ConfigError(f"defense {self.name!r} got unknown parameter(s) {sorted(unknown)}; its parameters "
                              f"are: {', '.join(sorted(self.PARAMS)) or 'none'}. Fix defense.params.")
        self.model = model
        self.params = {**self.PARAMS, **params}
        self.straight_through = False
        self.fixed_seed: int | None = None

    # -- what subclasses implement --------------------------------------------------------------
    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        """A differentiable approximation of ``transform``, for ``gradient="surrogate"`` (BPDA's backward pass)."""
        raise NotImplementedError(f"defense {self.name!r} declares gradient='surrogate' but implements no surrogate")

    @classmethod
    def has_surrogate(cls) -> bool:
        return cls.surrogate is not Defense.surrogate

    # -- the forward every attack and metric sees ------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.declaration.transforms_input:
            return self.classify(x)
        t = self.transform(x)
        if self.straight_through:
            # BPDA: forward through the transform, backward through the declared approximation
            g = self.surrogate(x) if self.declaration.gradient == "surrogate" else x
            t = g + (t - g).detach()
        elif not self.declaration.differentiable:
            t = t.detach() + 0 * x  # what autograd gives a naive attack: a zero gradient
        return self.classify(t)

    def rng(self, device: torch.device) -> torch.Generator | None:
        """The generator noise is drawn from: None (global, seeded by the run) or a fixed one per call."""
        if self.fixed_seed is None:
            return None
        return torch.Generator(device=device).manual_seed(self.fixed_seed)

    # -- views used by the adaptive attacks ------------------------------------------------------
    def view(self, **changes: object) -> "Defense":
        """A shallow copy (same weights) with some attributes changed, e.g. ``straight_through=True``."""
        clone = copy.copy(self)
        clone._modules = dict(self._modules)
        for key, value in changes.items():
            setattr(clone, key, value)
        return clone

    def gradient_view(self) -> nn.Module:
        """The view gradient attacks should use per the declaration: straight-through through a transform
        that is not differentiable (BPDA), the defense itself otherwise. Randomised defenses add EoT on top."""
        declared = self.declaration
        return self.view(straight_through=True) if declared.transforms_input and not declared.differentiable else self

    @property
    def backbone(self) -> nn.Module:
        """The classifier inside, undefended (for transforms; a trained defense's backbone is another model)."""
        return self.model

    def describe(self) -> str:
        shown = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.name}({shown})" if shown else self.name


class EoT(nn.Module):
    """Expectation over transformation: the mean of ``samples`` randomised forwards (one batched call).

    Averaging the logits of independent draws averages their input gradients
    too (the mean's gradient is the mean of the gradients), so every attack in
    the suite becomes an EoT attack without knowing it (Athalye et al. 2018).
    """

    def __init__(self, model: nn.Module, samples: int = 20):
        super().__init__()
        if samples < 1:
            raise ConfigError(f"EoT needs at least one sample, got {samples}.")
        self.model = model
        self.samples = samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        out = self.model(x.repeat(self.samples, *[1] * (x.dim() - 1)))
        return out.view(self.samples, n, *out.shape[1:]).mean(0)


@dataclass
class DefenseSpec:
    """The defense config group's content: a registered name and its parameters."""

    name: str = "none"
    params: dict = field(default_factory=dict)
