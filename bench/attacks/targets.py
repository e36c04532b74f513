"""Target rules for targeted attacks, chosen by name (``params.target``).

Finlayson et al. attack binary medical classifiers towards the opposite class;
multi-class benchmarks use a random or least-likely class; for multi-label
tasks a targeted attack flips one chosen label.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench.errors import ConfigError, unknown_choice
from bench.tasks import Task

# A rule maps (labels, clean logits, task, generator, argument) to (target, target_mask or None).
TargetRule = Callable[[torch.Tensor, torch.Tensor, Task, torch.Generator, str], tuple[torch.Tensor, torch.Tensor | None]]
TARGET_RULES: dict[str, TargetRule] = {}


def register_target_rule(name: str):
    def deco(fn: TargetRule) -> TargetRule:
        TARGET_RULES[name] = fn
        return fn

    return deco


def _single_label_only(task: Task, rule: str) -> None:
    if task.multi_label:
        raise ConfigError(f"target rule {rule!r} is for single-label tasks; multi-label tasks use 'flip:<label>' or 'flip_random'.")


@register_target_rule("opposite")
def _opposite(labels, logits, task, generator, arg):
    """Binary tasks: the other class (Finlayson et al.)."""
    _single_label_only(task, "opposite")
    if logits.shape[1] != 2:
        raise ConfigError(f"target rule 'opposite' needs a binary task, this one has {logits.shape[1]} classes; use 'next', 'random' or 'least_likely'.")
    return 1 - labels.view(-1), None


@register_target_rule("next")
def _next(labels, logits, task, generator, arg):
    _single_label_only(task, "next")
    return (labels.view(-1) + 1) % logits.shape[1], None


@register_target_rule("random")
def _random(labels, logits, task, generator, arg):
    """A uniformly random class other than the label (seeded)."""
    _single_label_only(task, "random")
    n_classes = logits.shape[1]
    offset = torch.randint(1, n_classes, labels.view(-1).shape, generator=generator).to(labels.device)
    return (labels.view(-1) + offset) % n_classes, None


@register_target_rule("least_likely")
def _least_likely(labels, logits, task, generator, arg):
    _single_label_only(task, "least_likely")
    return logits.argmin(1), None


@register_target_rule("class")
def _fixed_class(labels, logits, task, generator, arg):
    """``class:<k>``: every sample towards class k (samples already of class k cannot succeed)."""
    _single_label_only(task, "class")
    k = int(arg)
    if not 0 <= k < logits.shape[1]:
        raise ConfigError(f"target class {k} is out of range 0..{logits.shape[1] - 1}.")
    return torch.full_like(labels.view(-1), k), None


def _flip(labels: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[torch.arange(len(labels)), index] = True
    return torch.where(mask, 1 - labels, labels), mask


@register_target_rule("flip")
def _flip_label(labels, logits, task, generator, arg):
    """Multi-label: ``flip:<j>`` flips label j of every sample."""
    if not task.multi_label:
        raise ConfigError("target rule 'flip' is for multi-label tasks; single-label tasks use 'opposite', 'next', 'random' ...")
    j = int(arg)
    if not 0 <= j < labels.shape[1]:
        raise ConfigError(f"label {j} is out of range 0..{labels.shape[1] - 1}.")
    return _flip(labels, torch.full((len(labels),), j, dtype=torch.long, device=labels.device))


@register_target_rule("flip_random")
def _flip_random(labels, logits, task, generator, arg):
    if not task.multi_label:
        raise ConfigError("target rule 'flip_random' is for multi-label tasks.")
    index = torch.randint(0, labels.shape[1], (len(labels),), generator=generator).to(labels.device)
    return _flip(labels, index)


def make_targets(rule: str, labels: torch.Tensor, logits: torch.Tensor, task: Task, seed: int):
    """Apply the rule named ``rule`` (``name`` or ``name:arg``) to a batch."""
    name, _, arg = rule.partition(":")
    if name not in TARGET_RULES:
        raise unknown_choice("target rule", rule, TARGET_RULES, "Set the attack's params.target, e.g. target: opposite.")
    generator = torch.Generator().manual_seed(seed)
    return TARGET_RULES[name](labels, logits, task, generator, arg)
