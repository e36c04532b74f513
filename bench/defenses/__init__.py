"""Defenses: the interface (``base.py``), a registry, and one file per built-in defense.

Importing this package registers every built-in defense. Add one by writing a
``Defense`` subclass decorated with ``@DEFENSES.register("name")`` in a new file
here plus ``conf/defense/<name>.yaml``; the parametrised tests pick it up.
"""

from __future__ import annotations

import importlib
import pkgutil

import torch.nn as nn

from bench.defenses.base import Declaration, Defense, DefenseSpec, EoT
from bench.registry import Registry

DEFENSES: Registry[type[Defense]] = Registry("defense", "Set defense=<name> to one of them (conf/defense/).")
NONE = "none"


def register_defense(name: str):
    """Class decorator: make ``cls`` buildable as ``defense=<name>``."""

    def deco(cls: type[Defense]) -> type[Defense]:
        if cls.declaration.gradient == "surrogate" and not cls.has_surrogate():
            raise TypeError(f"defense {name!r} declares gradient='surrogate' but does not implement surrogate(x); "
                            "implement it, or declare gradient='straight_through'")
        cls.name = name
        DEFENSES.add(name, cls)
        return cls

    return deco


def build_defense(spec: DefenseSpec, model: nn.Module) -> nn.Module:
    """``model`` wrapped by the defense ``spec`` names (``none``: the model itself, unwrapped)."""
    cls = DEFENSES[spec.name]
    if spec.name == NONE:
        return model
    return cls(model, **(spec.params or {}))


def declaration_of(model: nn.Module) -> Declaration:
    """The declaration of a (possibly defended) model; an undefended classifier is deterministic and differentiable."""
    return model.declaration if isinstance(model, Defense) else Declaration()


def defense_name(model: nn.Module) -> str:
    return model.name if isinstance(model, Defense) else NONE


for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base",):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["DEFENSES", "Declaration", "Defense", "DefenseSpec", "EoT", "build_defense", "declaration_of",
           "defense_name", "register_defense"]
