"""The attack interface: a final public call that validates, runs and checks every epsilon.

Subclasses implement ``run`` (one epsilon) or override ``run_epsilons`` when
one pass serves every epsilon (foolbox's attacks, minimum-norm attacks). The
public ``__call__`` is not meant to be overridden: it is where targets are
chosen, propagations and queries are counted, and the threat model and query
budget are enforced on every batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn

from bench.attacks.criteria import Criterion
from bench.attacks.targets import make_targets
from bench.attacks.threat import NORMS, check_threat_model, require_2d, validate_eps
from bench.errors import ConfigError, ThreatModelViolation
from bench.tasks import Task


@dataclass
class AttackContext:
    """What an attack may need beyond the batch: the experiment's dataset, zoo and target model card.

    Only attacks with outside state (a transfer attack's surrogate, a patch
    learned on the train split) use it, in ``prepare``.
    """

    dataset: object  # bench.data.DatasetInfo
    data_root: str | None
    zoo_dir: str
    train: object  # bench.train.TrainConfig, for training a missing surrogate
    device: str = "cpu"
    target_card: object | None = None  # bench.models.ModelCard of the attacked model


@dataclass
class AttackOutput:
    """Adversarial inputs for one epsilon, with what they cost."""

    eps: float
    x_adv: torch.Tensor
    seconds: float
    queries: torch.Tensor | None = None  # per-sample model queries (score/decision-based attacks)
    forwards: float = 0.0  # forward passes per sample (mean over the batch)
    backwards: float = 0.0  # input-gradient backward passes per sample


class PropagationCounter(nn.Module):
    """Wraps a model and counts the images it forwards and the backward passes through it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.forwards = 0
        self.backwards = 0

    def reset(self) -> None:
        self.forwards = self.backwards = 0

    def _count_backward(self, grad: torch.Tensor) -> None:
        self.backwards += grad.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += x.shape[0]
        out = self.model(x)
        if out.requires_grad:
            out.register_hook(self._count_backward)
        return out


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


def best_over_restarts(
    x: torch.Tensor, criterion: Criterion, restarts: int,
    single_run: Callable[[torch.Tensor, Criterion], tuple[torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """Run ``single_run`` (returning adversarial inputs and a fooled mask) up to ``restarts`` times,
    each time only on the samples not fooled yet; per sample, the result of its last run is kept."""
    best = x.clone()
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        todo = (~fooled).nonzero().view(-1)
        if len(todo) == 0:
            break
        x_adv, found = single_run(x[todo], criterion.subset(todo))
        best[todo] = x_adv
        fooled[todo] = found
    return best


# Kinds whose model passes are forwards without autograd (the model form can serve them from an inference graph).
FORWARD_ONLY_KINDS = ("score", "decision", "transfer")


class Attack:
    """Base class.

    Class attributes: ``norms`` (threat models supported), ``kind`` ("gradient",
    "minimum_norm", "score", "decision", "transfer", "patch"), ``supports_targeted``,
    ``max_queries`` (set by query-limited attacks; enforced per sample), ``volumes``
    (False for attacks that only make sense on 2D images: they refuse NCDHW
    batches with an error listing the attacks that accept them).
    """

    name: str = "attack"
    norms: tuple[str, ...] = NORMS
    kind: str = "gradient"
    supports_targeted: bool = True
    max_queries: int | None = None
    volumes: bool = True

    COMMON_PARAMS = ("targeted", "target")

    def __init__(self, norm: str = "linf", seed: int = 0, **params: object):
        if norm not in self.norms:
            raise ConfigError(
                f"attack {self.name!r} does not support norm {norm!r}; it supports: {', '.join(self.norms)}. "
                f"Set the attack's norm to one of them."
            )
        allowed = set(self.param_names()) | set(self.COMMON_PARAMS)
        unknown = set(params) - allowed
        if unknown:
            raise ConfigError(
                f"attack {self.name!r} got unknown parameter(s) {sorted(unknown)}; "
                f"its parameters are: {', '.join(sorted(allowed))}."
            )
        self.norm = norm
        self.seed = seed
        self.params = params
        self.target_rule = params.get("target")
        self.targeted = bool(params.get("targeted", False)) or self.target_rule is not None
        if self.targeted and not self.supports_targeted:
            raise ConfigError(f"attack {self.name!r} has no targeted variant; remove params.targeted/target.")
        if self.targeted and not self.target_rule:
            raise ConfigError(
                f"attack {self.name!r} is targeted but has no target rule; set params.target to one of "
                f"opposite, next, random, least_likely, class:<k>, flip:<label>, flip_random."
            )

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        return ()

    @property
    def planned_passes(self) -> int:
        """Model passes per sample and epsilon, at most: the query budget, or steps x restarts (100 steps when
        the attack has no ``steps``). What ``eval.model_form=auto`` weighs against the cost of compiling."""
        if self.max_queries is not None:
            return int(self.max_queries)
        steps = self.params.get("steps", self.params.get("max_iter", 100))
        return int(steps or 1) * int(self.params.get("restarts", 1) or 1)

    @property
    def needs_input_gradient(self) -> bool:
        """Whether its model passes take an input gradient: score and decision attacks only query the model, a
        transfer attack takes its gradients on another model."""
        return self.kind not in FORWARD_ONLY_KINDS

    def prepare(self, context: AttackContext) -> None:
        """Called once per experiment before any batch; most attacks need nothing."""

    @staticmethod
    def _positive_int(name: str, value: object) -> int:
        number = int(value)  # type: ignore[arg-type]
        if number <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        return number

    def criterion(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task) -> Criterion:
        """The success criterion for this batch; targets come from the target rule and clean logits."""
        if not self.targeted:
            return Criterion(task, y)
        with torch.no_grad():
            logits = model(x)
        target, mask = make_targets(str(self.target_rule), y, logits, task, self.seed)
        return Criterion(task, y, target.to(y.device), None if mask is None else mask.to(y.device))

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons: Sequence[float], task: Task,
        criterion: Criterion | None = None,
    ) -> list[AttackOutput]:
        """Attack ``x`` (labels ``y``) at every epsilon; every result is checked against the threat model."""
        if not self.volumes:
            require_2d(x.shape, f"the {self.name} attack")
        for eps in epsilons:
            validate_eps(eps, self.norm)
        counter = PropagationCounter(model).eval()  # eval: foolbox warns about (and some code branches on) training mode
        with attack_mode(model), torch.enable_grad():
            crit = criterion if criterion is not None else self.criterion(model, x, y, task)
            if crit.targeted and not self.supports_targeted:
                raise ConfigError(f"attack {self.name!r} has no targeted variant, but was given a targeted criterion.")
            counter.reset()
            outputs = self.run_epsilons(counter, x, crit, list(epsilons))
        n = max(1, len(x))
        share = 1.0 / max(1, len(outputs))
        for out in outputs:
            check_threat_model(x, out.x_adv, out.eps, self.norm, self.name)
            if out.queries is not None and self.max_queries is not None and out.queries.numel() and int(out.queries.max()) > self.max_queries:
                raise ThreatModelViolation(
                    f"{self.name}: a sample used {int(out.queries.max())} queries, over the budget of {self.max_queries}."
                )
            if not out.forwards and not out.backwards:
                out.forwards = counter.forwards / n * share
                out.backwards = counter.backwards / n * share
        self.last_criterion = crit
        return outputs

    def run_epsilons(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, epsilons: list[float]) -> list[AttackOutput]:
        """Default: one ``run`` per epsilon, each timed and counted."""
        outputs = []
        counter = model if isinstance(model, PropagationCounter) else None
        n = max(1, len(x))
        for eps in epsilons:
            if counter is not None:
                counter.reset()
            self._last_queries = None
            started = time.perf_counter()
            x_adv = self.run(model, x, criterion, eps).detach()
            out = AttackOutput(eps, x_adv, time.perf_counter() - started)
            if counter is not None:
                out.forwards, out.backwards = counter.forwards / n, counter.backwards / n
            queries = getattr(self, "_last_queries", None)
            if self.max_queries is not None and queries is None:
                raise ThreatModelViolation(f"{self.name}: a query-limited attack must report its per-sample queries.")
            out.queries = None if queries is None else queries.clone()
            outputs.append(out)
        return outputs

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, eps: float) -> torch.Tensor:
        raise NotImplementedError
