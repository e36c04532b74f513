"""Any foolbox 3 attack, run through our engine (and therefore through our threat-model check)."""

from __future__ import annotations

import time

import foolbox as fb
import torch

from bench.attacks.base import Attack, AttackOutput
from bench.attacks.criteria import Criterion
from bench.attacks.registry import register_attack
from bench.errors import ConfigError

# foolbox attack classes by the norm their epsilons are measured in.
FOOLBOX_NORMS = {"linf": ("Linf", "FGSM", "FGM_Linf"), "l2": ("L2",)}


def foolbox_criterion(criterion: Criterion):
    """Our single-label criterion as foolbox's: misclassification, or reaching the target class."""
    if criterion.targeted:
        return fb.criteria.TargetedMisclassification(criterion.target.view(-1))
    return fb.criteria.Misclassification(criterion.labels.long().view(-1))


@register_attack("foolbox")
class FoolboxAttack(Attack):
    """Adapter: ``params.attack`` names a class in ``foolbox.attacks``; ``params.kwargs`` are its arguments."""

    norms = ("linf", "l2")

    @classmethod
    def param_names(cls):
        return ("attack", "kwargs")

    def __init__(self, norm="linf", seed=0, **params):
        super().__init__(norm, seed, **params)
        name = str(params.get("attack", "LinfPGD"))
        cls = getattr(fb.attacks, name, None)
        if cls is None or not isinstance(cls, type):
            names = [n for n in dir(fb.attacks) if n[0].isupper() and isinstance(getattr(fb.attacks, n), type)]
            raise ConfigError(f"unknown foolbox attack {name!r}; choices: {', '.join(sorted(names))}.")
        if name == "L2FMNAttack":
            raise ConfigError(
                "foolbox 3.3.4's L2FMNAttack never shrinks its projection (its 'minimal' examples have "
                "norms near the largest epsilon); use medbench's own attack=fmn_l2 instead."
            )
        prefix_ok = name.startswith(FOOLBOX_NORMS[norm]) or name in FOOLBOX_NORMS[norm]
        if not prefix_ok:
            raise ConfigError(f"foolbox attack {name!r} does not measure epsilons in the {norm} norm; pick a {norm} attack.")
        self.fb_attack = cls(**dict(params.get("kwargs") or {}))
        self.fb_name = name

    def run_epsilons(self, model, x, criterion, epsilons):
        if criterion.task.multi_label:
            raise ConfigError("foolbox attacks assume one label per image; multi-label tasks need medbench's own attacks.")
        torch.manual_seed(self.seed)
        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
        fb_criterion = foolbox_criterion(criterion)
        started = time.perf_counter()
        _, clipped, _ = self.fb_attack(fmodel, x, fb_criterion, epsilons=list(epsilons))
        per_eps = (time.perf_counter() - started) / max(1, len(epsilons))
        return [AttackOutput(eps, adv.detach(), per_eps) for eps, adv in zip(epsilons, clipped)]
