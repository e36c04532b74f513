"""Attacks: a registry of attack classes (one file per family) and the threat-model checks.

Importing this package registers every built-in attack. Add one by writing a
subclass of ``Attack`` decorated with ``@register_attack("name")`` in a file
imported here, plus a YAML under conf/attack/.
"""

from bench.attacks import foolbox_adapter, gradient  # noqa: F401  (registration side effects)
from bench.attacks.base import Attack, AttackOutput
from bench.attacks.registry import ATTACKS, build_attack, register_attack
from bench.attacks.threat import check_threat_model, flat_norm

__all__ = ["ATTACKS", "Attack", "AttackOutput", "build_attack", "check_threat_model", "flat_norm", "register_attack"]
