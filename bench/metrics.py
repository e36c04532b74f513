"""Every number that reaches a table, computed from per-sample records as ../shared/DESIGN.md defines it.

- clean_acc, robust_acc: over all n samples; a clean error counts as non-robust.
  A battery's robust_acc is the per-sample worst case over its attacks.
- asr: among samples correct when clean, the fraction the attack flips
  (untargeted) or sends to its target (targeted).
- clean_auc, adv_auc: medmnist's Evaluator AUC for the task type; adv_auc
  scores each sample's adversarial example (the clean input where none was made).
- linf/l2/l0 mean and median: over successful adversarial examples only.
- queries: per-sample model queries of black-box attacks, over successes.
- forwards/backwards per sample: propagations spent, over all n samples.
- missed_disease_rate / false_alarm_rate (binary tasks): among clean-correct
  diseased (healthy) samples, the fraction the attack flips.
- per-class robust accuracy, and 95% percentile-bootstrap intervals for
  robust_acc and asr (test sets are small: 156 images for BreastMNIST).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95

# The label that means "disease" in MedMNIST's binary datasets (medmnist.INFO label names):
# BreastMNIST 0 = malignant, 1 = normal/benign; PneumoniaMNIST 0 = normal, 1 = pneumonia.
POSITIVE_CLASS = {"breastmnist": 0, "pneumoniamnist": 1}


def clean_acc(clean_correct: torch.Tensor | np.ndarray) -> float:
    values = np.asarray(clean_correct, dtype=float)
    return float(values.mean()) if values.size else math.nan


def robust_acc(robust: torch.Tensor | np.ndarray) -> float:
    """``robust`` is per-sample: correct when clean and still correct under attack."""
    values = np.asarray(robust, dtype=float)
    return float(values.mean()) if values.size else math.nan


def attack_success_rate(clean_correct, success) -> float:
    """Fraction of clean-correct samples the attack reached its goal on (NaN when none was correct)."""
    cc, ok = np.asarray(clean_correct, dtype=bool), np.asarray(success, dtype=bool)
    base = int(cc.sum())
    return float((ok & cc).sum()) / base if base else math.nan


def median_over_successes(values, success) -> float:
    chosen = np.asarray(values, dtype=float)[np.asarray(success, dtype=bool)]
    chosen = chosen[~np.isnan(chosen)]
    return float(np.median(chosen)) if chosen.size else math.nan


def mean_over_successes(values, success) -> float:
    chosen = np.asarray(values, dtype=float)[np.asarray(success, dtype=bool)]
    chosen = chosen[~np.isnan(chosen)]
    return float(chosen.mean()) if chosen.size else math.nan


def auc(labels: np.ndarray, scores: np.ndarray, task_type: str) -> float:
    """medmnist's Evaluator AUC; NaN when a class is missing from the labels (tiny subsets)."""
    from medmnist.evaluator import getAUC

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(getAUC(labels, scores, task_type))
    except ValueError:
        return math.nan


def bootstrap_interval(values_fn, n: int, seed: int, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """95% percentile interval of ``values_fn(indices)`` over resamples of the n samples with replacement.

    ``values_fn`` takes an index array of shape (resamples, n) and returns one
    value per resample (NaN resamples, e.g. no clean-correct sample, are dropped).
    """
    if n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    return percentile_interval(values_fn(rng.integers(0, n, size=(resamples, n))))


def percentile_interval(stats) -> tuple[float, float]:
    """The 95% percentile interval of bootstrap statistics (NaN ones dropped; NaN, NaN when none is left)."""
    stats = np.asarray(stats, dtype=float)
    stats = stats[~np.isnan(stats)]
    if not stats.size:
        return math.nan, math.nan
    alpha = (1 - CONFIDENCE) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


@dataclass
class SampleView:
    """Per-sample arrays (length n) for one reported row: one attack, or several combined worst-case."""

    labels: np.ndarray         # (n,) or (n, L)
    clean_correct: np.ndarray  # bool
    clean_scores: np.ndarray   # (n, K)
    robust: np.ndarray         # bool: correct when clean and under every attack in the view
    success: np.ndarray        # bool: some attack in the view reached its goal
    adv_pred: np.ndarray       # prediction on the chosen adversarial example (clean prediction if none)
    adv_scores: np.ndarray     # (n, K) scores of the chosen adversarial example (clean if none)
    linf: np.ndarray
    l2: np.ndarray
    l0: np.ndarray
    queries: np.ndarray
    forwards: np.ndarray       # summed over the view's attacks
    backwards: np.ndarray
    seconds: np.ndarray


def _stack(frame: pd.DataFrame, column: str, dtype=float) -> np.ndarray:
    values = frame[column].tolist()
    return np.array([np.nan if v is None else v for v in values], dtype=dtype) if dtype is float else np.array(values)


def _matrix(values: Sequence) -> np.ndarray:
    return np.array([np.asarray(v, dtype=float) for v in values])


def sample_view(records: pd.DataFrame, attacks: Sequence[str], eps: float) -> SampleView:
    """Combine the records of ``attacks`` at ``eps`` per sample (worst case over attacks).

    A sample is robust only if every attack that ran on it left it correct; its
    adversarial example is the successful one with the smallest L2 norm, or,
    if none succeeded, the last one made.
    """
    parts = []
    for attack in attacks:
        part = records[(records["attack"] == attack) & np.isclose(records["eps"].astype(float), eps)]
        parts.append(part.sort_values("index", kind="stable"))
    first = parts[0]
    n = len(first)
    if any(len(p) != n for p in parts):
        raise ValueError(f"attacks {list(attacks)} at eps {eps} cover different samples")
    cc = first["clean_correct"].to_numpy(dtype=bool)
    clean_scores = _matrix(first["clean_scores"].tolist())
    clean_pred = first["clean_pred"].tolist()
    attacked = np.stack([p["attacked"].to_numpy(dtype=bool) for p in parts])
    adv_correct = np.stack([p["adv_correct"].fillna(True).to_numpy(dtype=bool) for p in parts])
    succeeded = np.stack([p["success"].fillna(False).to_numpy(dtype=bool) for p in parts]) & attacked
    l2 = np.stack([_stack(p, "l2") for p in parts])

    robust = cc & np.all(~attacked | adv_correct, axis=0)
    success = cc & succeeded.any(0)
    # the chosen example: smallest-L2 success, else the last attack that ran, else none (-1)
    l2_success = np.where(succeeded, np.nan_to_num(l2, nan=np.inf), np.inf)
    last_attacked = np.where(attacked.any(0), attacked.shape[0] - 1 - np.argmax(attacked[::-1], axis=0), -1)
    chosen = np.where(success, l2_success.argmin(0), last_attacked)

    def pick(column: str) -> np.ndarray:
        values = np.stack([_stack(p, column) for p in parts])
        out = np.full(n, np.nan)
        ok = chosen >= 0
        out[ok] = values[chosen[ok], np.arange(n)[ok]]
        return out

    adv_scores = clean_scores.copy()
    adv_pred = list(clean_pred)
    for i in np.nonzero(chosen >= 0)[0]:
        row = parts[chosen[i]].iloc[i]
        adv_scores[i] = np.asarray(row["adv_scores"], dtype=float)
        adv_pred[i] = row["adv_pred"]

    def total(column: str) -> np.ndarray:
        return np.nansum(np.stack([_stack(p, column) for p in parts]), axis=0)

    return SampleView(
        labels=np.array(first["label"].tolist()), clean_correct=cc, clean_scores=clean_scores,
        robust=robust, success=success, adv_pred=np.array(adv_pred, dtype=object), adv_scores=adv_scores,
        linf=pick("linf"), l2=pick("l2"), l0=pick("l0"), queries=pick("queries"),
        forwards=total("forwards"), backwards=total("backwards"), seconds=total("seconds"),
    )


def flip_rates(view: SampleView, positive: int) -> tuple[float, float]:
    """(missed disease, false alarm): flipped fraction of clean-correct positives, and of negatives."""
    labels = np.asarray(view.labels).reshape(len(view.clean_correct), -1)[:, 0]
    rates = []
    for cls in (positive, 1 - positive):
        base = view.clean_correct & (labels == cls)
        rates.append(float((view.success & base).sum()) / base.sum() if base.sum() else math.nan)
    return rates[0], rates[1]


def per_class_robust_acc(view: SampleView) -> str:
    """'class:robust_acc' pairs, ';'-joined (empty for multi-label tasks)."""
    labels = np.asarray(view.labels)
    if labels.ndim > 1 and labels.shape[1] > 1:
        return ""
    labels = labels.reshape(-1)
    return ";".join(f"{int(c)}:{view.robust[labels == c].mean():.4f}" for c in np.unique(labels))


def summarise(view: SampleView, task_type: str, flag: str, seed: int) -> dict[str, float | int | str]:
    """Every metric of one row (one attack or battery at one epsilon) from its per-sample view."""
    n = len(view.robust)
    robust = view.robust.astype(float)
    cc = view.clean_correct
    success = view.success
    robust_lo, robust_hi = bootstrap_interval(lambda idx: robust[idx].mean(1), n, seed)

    def asr_of(idx: np.ndarray) -> np.ndarray:
        base = cc[idx].sum(1)
        return np.where(base > 0, (success[idx] & cc[idx]).sum(1) / np.maximum(base, 1), np.nan)

    asr_lo, asr_hi = bootstrap_interval(asr_of, n, seed + 1)
    missed = alarm = math.nan
    if task_type == "binary-class":
        missed, alarm = flip_rates(view, POSITIVE_CLASS.get(flag, 1))
    labels = np.asarray(view.labels).reshape(n, -1)
    return {
        "n": n,
        "clean_acc": clean_acc(cc),
        "robust_acc": robust_acc(view.robust),
        "robust_acc_lo": robust_lo,
        "robust_acc_hi": robust_hi,
        "asr": attack_success_rate(cc, success),
        "asr_lo": asr_lo,
        "asr_hi": asr_hi,
        "clean_auc": auc(labels, view.clean_scores, task_type),
        "adv_auc": auc(labels, view.adv_scores, task_type),
        "missed_disease_rate": missed,
        "false_alarm_rate": alarm,
        "per_class_robust_acc": per_class_robust_acc(view),
        "linf_mean": mean_over_successes(view.linf, success),
        "linf_median": median_over_successes(view.linf, success),
        "l2_mean": mean_over_successes(view.l2, success),
        "l2_median": median_over_successes(view.l2, success),
        "l0_mean": mean_over_successes(view.l0, success),
        "l0_median": median_over_successes(view.l0, success),
        "queries_mean": mean_over_successes(view.queries, success),
        "queries_median": median_over_successes(view.queries, success),
        "forwards_per_sample": round(float(view.forwards.sum()) / max(1, n), 2),
        "backwards_per_sample": round(float(view.backwards.sum()) / max(1, n), 2),
        "seconds": round(float(view.seconds.sum()), 3),
    }
