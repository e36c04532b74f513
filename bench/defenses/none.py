"""No defense: the classifier as trained, wrapped so every row names its defense the same way."""

from __future__ import annotations

from bench.defenses import register_defense
from bench.defenses.base import Declaration, Defense


@register_defense("none")
class NoDefense(Defense):
    """The undefended classifier (``forward`` is the model's)."""

    declaration = Declaration()
