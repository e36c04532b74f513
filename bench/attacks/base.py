"""The attack interface: a final public call that validates, runs and checks every epsilon.

Subclasses implement ``run`` (one epsilon) or override ``run_epsilons`` when
one pass serves every epsilon (foolbox's attacks, minimum-norm attacks). The
public ``__call__`` is not meant to be overridden: it is where the threat
model is enforced on every batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn

from bench.attacks.threat import NORMS, check_threat_model, validate_eps
from bench.errors import ConfigError
from bench.tasks import Task


@dataclass
class AttackOutput:
    """Adversarial inputs for one epsilon, and the wall time spent on them."""

    eps: float
    x_adv: torch.Tensor
    seconds: float


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients while attacking; restores the model afterwards."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)


class Attack:
    """Base class. ``norms`` lists the threat models the attack supports."""

    name: str = "attack"
    norms: tuple[str, ...] = NORMS

    def __init__(self, norm: str = "linf", seed: int = 0, **params: object):
        if norm not in self.norms:
            raise ConfigError(
                f"attack {self.name!r} does not support norm {norm!r}; it supports: {', '.join(self.norms)}. "
                f"Set the attack's norm to one of them."
            )
        unknown = set(params) - set(self.param_names())
        if unknown:
            raise ConfigError(
                f"attack {self.name!r} got unknown parameter(s) {sorted(unknown)}; "
                f"its parameters are: {', '.join(self.param_names()) or 'none'}."
            )
        self.norm = norm
        self.seed = seed
        self.params = params

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        return ()

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons: Sequence[float], task: Task
    ) -> list[AttackOutput]:
        """Attack ``x`` (labels ``y``) at every epsilon; every result is checked against the threat model."""
        for eps in epsilons:
            validate_eps(eps, self.norm)
        with attack_mode(model), torch.enable_grad():
            outputs = self.run_epsilons(model, x, y, list(epsilons), task)
        for out in outputs:
            check_threat_model(x, out.x_adv, out.eps, self.norm, self.name)
        return outputs

    def run_epsilons(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons: list[float], task: Task
    ) -> list[AttackOutput]:
        """Default: one ``run`` per epsilon, each timed."""
        outputs = []
        for eps in epsilons:
            started = time.perf_counter()
            x_adv = self.run(model, x, y, eps, task).detach()
            outputs.append(AttackOutput(eps, x_adv, time.perf_counter() - started))
        return outputs

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, task: Task) -> torch.Tensor:
        raise NotImplementedError
