"""What counts as adversarial, and the losses attacks climb, for every task type and goal.

A ``Criterion`` binds a task type, the true labels and (for targeted attacks)
the targets. Attacks only ever ask it three things: is this output
adversarial, a per-sample loss to increase, and a per-sample margin that is
positive exactly when the output is adversarial.

- single-label (binary, multi-class, ordinal): untargeted = prediction differs
  from the label; targeted = prediction equals the target class.
- multi-label (ChestMNIST): untargeted = any label flipped; targeted = every
  label in ``target_mask`` has the target value (e.g. one chosen label flipped).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.tasks import Task


@dataclass
class Criterion:
    task: Task
    labels: torch.Tensor  # (N,) long, or (N, L) 0/1 for multi-label
    target: torch.Tensor | None = None  # (N,) long, or (N, L) 0/1 desired labels
    target_mask: torch.Tensor | None = None  # (N, L) bool: the labels that must reach ``target``

    @property
    def targeted(self) -> bool:
        return self.target is not None

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, index: torch.Tensor) -> "Criterion":
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return Criterion(self.task, self.labels[index], pick(self.target), pick(self.target_mask))

    # -- single-label helpers -------------------------------------------------------
    @staticmethod
    def _other_max(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        masked = logits.scatter(1, cls.view(-1, 1), float("-inf"))
        return masked.amax(1)

    def margin(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-sample margin, > 0 exactly when adversarial (CW-style, in logit units)."""
        if self.task.multi_label:
            if self.targeted:
                signed = (2 * self.target.float() - 1) * logits
                return signed.masked_fill(~self.target_mask, float("inf")).amin(1)
            return (-(2 * self.labels.float() - 1) * logits).amax(1)
        if self.targeted:
            t = self.target.view(-1)
            return logits.gather(1, t.view(-1, 1)).view(-1) - self._other_max(logits, t)
        y = self.labels.view(-1)
        return self._other_max(logits, y) - logits.gather(1, y.view(-1, 1)).view(-1)

    def is_adversarial(self, logits: torch.Tensor) -> torch.Tensor:
        if self.task.multi_label:
            pred = (logits > 0).long()
            if self.targeted:
                ok = (pred == self.target.long()) | ~self.target_mask
                return ok.all(1)
            return (pred != self.labels.long()).any(1)
        pred = logits.argmax(1)
        if self.targeted:
            return pred == self.target.view(-1)
        return pred != self.labels.view(-1)

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-sample loss an attack increases: CE/BCE away from the label, or towards the target."""
        if self.task.multi_label:
            if self.targeted:
                bce = F.binary_cross_entropy_with_logits(logits, self.target.float(), reduction="none")
                return -(bce * self.target_mask.float()).sum(1)
            return F.binary_cross_entropy_with_logits(logits, self.labels.float(), reduction="none").sum(1)
        if self.targeted:
            return -F.cross_entropy(logits, self.target.view(-1), reduction="none")
        return F.cross_entropy(logits, self.labels.view(-1), reduction="none")
