"""Defenses that are robustly trained checkpoints: PGD adversarial training and TRADES.

At inference they are the classifier itself; what makes them defenses is how
the weights were made (``bench/defenses/training.py``), recorded on the model
card and in the zoo key. Their adaptive attack is transfer from the undefended
backbone of the same recipe and seed.
"""

from __future__ import annotations

from bench.defenses import register_defense
from bench.defenses.base import Declaration, Defense


@register_defense("pgd_at")
class PGDAdversarialTraining(Defense):
    """Madry et al. 2018: trained on PGD examples (eps, steps and step size in conf/defense/pgd_at.yaml)."""

    declaration = Declaration(trained="pgd_at")


@register_defense("trades")
class TRADES(Defense):
    """Zhang et al. 2019: cross-entropy plus beta x KL(clean || adversarial), adversary maximising the KL."""

    declaration = Declaration(trained="trades")
