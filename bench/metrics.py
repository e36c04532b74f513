"""Every number that reaches a table, as ../shared/DESIGN.md defines it.

- clean_acc, robust_acc: over all n samples; a clean error counts as non-robust.
- asr: among samples correct when clean, the fraction the attack flips.
- linf/l2 medians: over successful adversarial examples only (NaN when none).
"""

from __future__ import annotations

import math

import torch


def clean_acc(clean_correct: torch.Tensor) -> float:
    return float(clean_correct.float().mean()) if clean_correct.numel() else math.nan


def robust_acc(robust: torch.Tensor) -> float:
    """``robust`` is per-sample: correct when clean and still correct under attack."""
    return float(robust.float().mean()) if robust.numel() else math.nan


def attack_success_rate(clean_correct: torch.Tensor, success: torch.Tensor) -> float:
    """Fraction of clean-correct samples the attack flipped (NaN when none was correct)."""
    base = int(clean_correct.sum())
    return float((success & clean_correct).sum()) / base if base else math.nan


def median_over_successes(values: torch.Tensor, success: torch.Tensor) -> float:
    chosen = values[success]
    return float(chosen.median()) if chosen.numel() else math.nan


def mean_over_successes(values: torch.Tensor, success: torch.Tensor) -> float:
    chosen = values[success]
    return float(chosen.mean()) if chosen.numel() else math.nan
