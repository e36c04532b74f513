"""Adaptive attacks, chosen by a defense's declaration and run with the standard battery.

Each is registered with the rule that selects it (Tramer et al. 2020: an
evaluation must attack the defense as built, not the model it wraps):

- ``bpda_apgd_ce``: APGD-CE through the BPDA view of an input transform
  (Athalye et al. 2018): forward through the transform, backward through the
  declared approximation (the identity, or the defense's differentiable
  surrogate, e.g. JPEG's);
- ``eot_apgd_ce``: APGD-CE on the mean of ``EOT_SAMPLES`` randomised forwards
  of the defense's gradient view (expectation over transformation);
- ``transfer_backbone``: MI-FGSM examples crafted on the undefended backbone
  of the same recipe and seed, evaluated on the defense (transfer).

They join the battery's plan: the white-box ones after its white-box attacks
and before its black-box ones (Square), the transfer attack last, so a sample
only a black-box attack breaks is one every white-box attack left robust. In
sequential mode each sees only the samples still robust, and the battery row
is the per-sample worst case over everything run. The standard battery's hash is unchanged: the
adaptive attacks follow from the declaration, and the ``adaptive`` column
names them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn

from bench.attacks.base import Attack, PropagationCounter
from bench.defenses.base import Declaration, Defense, EoT
from bench.registry import Registry

EOT_SAMPLES = 20  # draws per gradient; the floor (Athalye et al. used 30-80 on ImageNet)
DEFAULT_GRADIENT_PARAMS = {"steps": 100, "loss": "ce", "restarts": 1, "rho": 0.75}
TRANSFER_PARAMS = {"steps": 20, "rel_stepsize": 0.1, "momentum": 1.0}  # MI-FGSM, as conf/attack/mifgsm_transfer.yaml


def gradient_view(model: nn.Module) -> nn.Module:
    """What gradient attacks should differentiate: the declaration's view, with EoT for randomised defenses."""
    if not isinstance(model, Defense):
        return model
    view = model.gradient_view()
    return EoT(view, EOT_SAMPLES) if model.declaration.randomised else view


class ViewAttack(Attack):
    """Runs ``inner`` on a view of the attacked model (straight-through, EoT); results are judged on the model itself."""

    def __init__(self, inner: Attack, make_view: Callable[[nn.Module], nn.Module], name: str):
        self.inner, self.make_view, self.name = inner, make_view, name
        self.norm, self.seed, self.params = inner.norm, inner.seed, inner.params
        self.kind, self.targeted, self.target_rule = inner.kind, inner.targeted, inner.target_rule

    def run_epsilons(self, model, x, criterion, epsilons):
        base = model.model if isinstance(model, PropagationCounter) else model
        view = PropagationCounter(self.make_view(base)).eval()
        return self.inner.run_epsilons(view, x, criterion, epsilons)


@dataclass(frozen=True)
class AdaptiveContext:
    """What building an adaptive attack may use."""

    norm: str
    seed: int
    gradient_params: dict  # the battery's APGD-CE parameters, so adaptive attacks get the same budget
    backbone: nn.Module | None  # the undefended classifier of the same recipe and seed (transfer source)


@dataclass(frozen=True)
class AdaptiveAttack:
    name: str
    applies: Callable[[Declaration], bool]
    why: str
    build: Callable[[AdaptiveContext], Attack]


ADAPTIVE: Registry[AdaptiveAttack] = Registry("adaptive attack")


def adaptive_attack(name: str, applies: Callable[[Declaration], bool], why: str):
    def deco(build: Callable[[AdaptiveContext], Attack]) -> Callable[[AdaptiveContext], Attack]:
        ADAPTIVE.add(name, AdaptiveAttack(name, applies, why, build))
        return build

    return deco


def _apgd(context: AdaptiveContext) -> Attack:
    from bench.attacks import build_attack

    return build_attack("apgd", context.norm, context.seed, {**DEFAULT_GRADIENT_PARAMS, **context.gradient_params})


@adaptive_attack("bpda_apgd_ce", lambda d: d.transforms_input,
                 "an input transform: attacked through its BPDA view (identity or declared surrogate gradient)")
def _bpda(context: AdaptiveContext) -> Attack:
    def straight_through(model: nn.Module) -> nn.Module:
        if not isinstance(model, Defense):
            return model
        view = model.view(straight_through=True)
        return EoT(view, EOT_SAMPLES) if model.declaration.randomised else view

    return ViewAttack(_apgd(context), straight_through, "bpda_apgd_ce")


@adaptive_attack("eot_apgd_ce", lambda d: d.randomised,
                 f"randomised: gradients averaged over {EOT_SAMPLES} draws (EoT)")
def _eot(context: AdaptiveContext) -> Attack:
    return ViewAttack(_apgd(context), gradient_view, "eot_apgd_ce")


@adaptive_attack("transfer_backbone", lambda d: d.transforms_input or d.trained is not None,
                 "examples crafted on the undefended backbone of the same recipe and seed")
def _transfer(context: AdaptiveContext) -> Attack:
    from bench.attacks.transfer import Transfer

    if context.backbone is None:
        raise ValueError("transfer_backbone needs the undefended backbone; resolve it before the run")
    attack = Transfer(context.norm, context.seed, **TRANSFER_PARAMS)
    attack.surrogate = context.backbone.eval()
    return attack


def adaptive_attacks(declaration: Declaration) -> list[str]:
    """The adaptive attacks a declaration calls for, in run order."""
    return [a.name for a in ADAPTIVE.values() if a.applies(declaration)]
