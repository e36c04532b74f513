"""Balanced error, as MedMNIST-C scores a model, with bootstrap resamples computed in one pass."""

from __future__ import annotations

import numpy as np


def balanced_error(labels: np.ndarray, pred: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray | float:
    """1 - balanced accuracy (the mean recall over the classes present); multi-label: mean over labels.

    ``idx`` (R, n) gives R bootstrap resamples of the samples; then one value per resample is returned.
    Binary and multi-class predictions are class indices (MedMNIST-C thresholds binary scores at 0.5,
    which is the argmax of two softmax scores); multi-label ones are 0/1 matrices (logit > 0).
    """
    single = idx is None
    idx = np.arange(len(labels))[None, :] if single else idx
    if labels.ndim == 2:  # multi-label: every label is its own binary task
        values = np.mean([balanced_error(labels[:, j], pred[:, j], idx) for j in range(labels.shape[1])], axis=0)
        return float(values[0]) if single else values
    y, correct = labels[idx], (pred == labels)[idx]
    recalls = []
    for k in np.unique(labels):
        in_class = y == k
        count = in_class.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(count > 0, (correct & in_class).sum(1) / count, np.nan))
    values = 1.0 - np.nanmean(np.stack(recalls), axis=0)
    return float(values[0]) if single else values


def accuracy(labels: np.ndarray, pred: np.ndarray) -> float:
    right = (pred == labels).all(1) if labels.ndim == 2 else pred == labels
    return float(right.mean())
