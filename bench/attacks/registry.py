"""The attack registry: a name -> class map filled by ``@register_attack``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.attacks.base import Attack
from bench.errors import unknown_choice

ATTACKS: dict[str, type[Attack]] = {}


def register_attack(name: str) -> Callable[[type[Attack]], type[Attack]]:
    """Class decorator: make ``cls`` buildable from configs as ``name``."""

    def deco(cls: type[Attack]) -> type[Attack]:
        cls.name = name
        ATTACKS[name] = cls
        return cls

    return deco


def build_attack(name: str, norm: str = "linf", seed: int = 0, params: dict[str, Any] | None = None) -> Attack:
    """Instantiate a registered attack; unknown names list every valid one."""
    if name not in ATTACKS:
        raise unknown_choice("attack", name, ATTACKS, "Set attack.name (or attack=<config>) to one of them.")
    return ATTACKS[name](norm=norm, seed=seed, **(params or {}))


def volume_attacks() -> list[str]:
    """Registered attacks that accept volumes (NCDHW), from each class's ``volumes`` flag: error messages list them."""
    return sorted(name for name, cls in ATTACKS.items() if cls.volumes)
