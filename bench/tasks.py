"""Task types from medmnist.INFO and what they mean for losses, predictions and success.

One small object per task type, looked up in a registry, so the trainer, the
attacks and the metrics never branch on task strings themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.errors import unknown_choice


@dataclass(frozen=True)
class Task:
    """How a task type turns logits into a loss, predictions and a correctness mask."""

    name: str
    multi_label: bool

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Training/attack loss: cross-entropy, or per-label BCE for multi-label tasks."""
        if self.multi_label:
            per = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").sum(1)
        else:
            per = F.cross_entropy(logits, labels.long().view(-1), reduction="none")
        if reduction == "none":
            return per
        return per.mean() if reduction == "mean" else per.sum()

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Class index (N,) for softmax tasks; 0/1 label vector (N, L) for multi-label."""
        if self.multi_label:
            return (logits > 0).long()
        return logits.argmax(1)

    def correct(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Boolean (N,): the prediction equals the label (every label, for multi-label)."""
        pred = self.predict(logits)
        if self.multi_label:
            return (pred == labels.long()).all(1)
        return pred == labels.long().view(-1)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities in the form medmnist's Evaluator expects for AUC."""
        return torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, 1)

    def labels_as_targets(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels in the shape the loss wants: (N,) long, or (N, L) float for multi-label."""
        return labels.float() if self.multi_label else labels.long().view(-1)


TASKS: dict[str, Task] = {
    "binary-class": Task("binary-class", multi_label=False),
    "multi-class": Task("multi-class", multi_label=False),
    # Ordinal regression is scored as multi-class, as the MedMNIST baselines do.
    "ordinal-regression": Task("ordinal-regression", multi_label=False),
    "multi-label, binary-class": Task("multi-label, binary-class", multi_label=True),
}


def get_task(name: str) -> Task:
    """Look up the Task for a medmnist.INFO task string."""
    try:
        return TASKS[name]
    except KeyError:
        raise unknown_choice("task type", name, TASKS) from None
