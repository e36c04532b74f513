"""Attacks: a registry of attack classes (one file per family) and the threat-model checks.

Importing this package imports every module in it, which registers every
built-in attack. Add one by writing a subclass of ``Attack`` decorated with
``@register_attack("name")`` in a new file here, plus a YAML under conf/attack/.
"""

import importlib
import pkgutil

from bench.attacks.base import Attack, AttackOutput
from bench.attacks.criteria import Criterion
from bench.attacks.registry import ATTACKS, build_attack, register_attack
from bench.attacks.threat import check_threat_model, flat_norm

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ATTACKS", "Attack", "AttackOutput", "Criterion", "build_attack", "check_threat_model", "flat_norm", "register_attack"]
