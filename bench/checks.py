"""Checks attached to every result as flags (modelled on AutoAttack's checks and RobustBench's rules).

A flag does not stop a run: it marks a number that should not be trusted without a
look. Each check is one registered function with its documented threshold, and it
says whether it *blocks ranking*: a flag that blocks ranking keeps the row out of
the leaderboard's ranking (bench/leaderboard/admission.py), a warning is shown
beside the number. Three scopes:

- ``model``: probes the classifier on a few (~32) samples of the evaluated split;
- ``predictions``: reads the clean predictions on the whole evaluated split;
- ``rows``: reads the summary rows of one evaluation.

Adding a check is one decorated function; the README, the page and the admission
rules list the registry.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from bench.published import published_baseline
from bench.registry import Registry
from bench.tasks import Task

BLACK_BOX_KINDS = ("score", "decision", "transfer")
TOLERANCE = 0.01  # one point: smaller differences are noise on test sets of ~150 images
CONSTANT_SHARE = 0.95  # constant_predictor: one class predicted for more than this share of the split
CHANCE_MARGIN = 0.05  # constant_predictor: balanced accuracy (AUC for multi-label) below chance + this
BASELINE_MARGIN = 0.10  # below_published_baseline: ACC more than this far below the published ACC


@dataclass(frozen=True)
class CleanPredictions:
    """What a model predicted on the clean evaluated split: input of the ``predictions`` checks."""

    flag: str
    size: int
    task_type: str
    num_classes: int
    labels: np.ndarray  # (n,) class indices, or (n, L) 0/1 for multi-label
    preds: np.ndarray  # same shape as labels
    scores: np.ndarray  # (n, K) probabilities, as medmnist's Evaluator takes them

    @property
    def multi_label(self) -> bool:
        return self.labels.ndim == 2 and self.labels.shape[1] > 1


@dataclass(frozen=True)
class Check:
    """A registered check: what it reads, its threshold, whether it blocks ranking, and what its flag means."""

    name: str
    scope: str  # model | predictions | rows
    blocks_ranking: bool
    threshold: str
    meaning: str
    fn: Callable


CHECKS: Registry[Check] = Registry("check")


def check(name: str, scope: str, blocks_ranking: bool, threshold: str, meaning: str):
    """Register ``fn`` as a check. Model/prediction checks return why they fired (or None); row checks a row set."""

    def deco(fn: Callable) -> Callable:
        CHECKS.add(name, Check(name, scope, blocks_ranking, threshold, meaning, fn))
        return fn

    return deco


# --------------------------------------------------------------------------------------------------
# model: probe the classifier
# --------------------------------------------------------------------------------------------------
@check("zero_grad", "model", True, "input gradient zero or non-finite for more than half of the probe samples",
       "gradients vanish (masking): gradient attacks are blind, robust accuracy is likely overestimated")
def _zero_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task) -> str | None:
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = task.loss(model(x), task.labels_as_targets(y), reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    dead = (grad.flatten(1).abs().amax(1) == 0) | ~torch.isfinite(grad.flatten(1)).all(1)
    share = float(dead.float().mean())
    return f"zero or non-finite input gradient for {share:.0%} of {len(x)} probe samples" if share > 0.5 else None


@check("softmax_output", "model", True, "every output in [0, 1] (and rows summing to 1 for single-label tasks)",
       "model outputs probabilities: losses saturate, gradient attacks can be weakened")
def _softmax_output(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task) -> str | None:
    with torch.no_grad():
        out = model(x)
    in_unit = bool(((out >= 0) & (out <= 1)).all())
    if not task.multi_label:
        in_unit = in_unit and bool(torch.allclose(out.sum(1), torch.ones(len(out)), atol=1e-3))
    return "outputs look like probabilities, not logits" if in_unit else None


@check("nondeterministic", "model", True, "two identical forward passes differ (rtol 1e-4, atol 1e-5)",
       "randomised outputs: two identical calls differ; use EOT before trusting the number")
def _nondeterministic(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task) -> str | None:
    with torch.no_grad():
        same = torch.allclose(model(x), model(x), rtol=1e-4, atol=1e-5)
    return None if same else "two identical forward passes gave different outputs"


@check("unbounded_eps_not_zero", "model", True, "PGD (20 steps) with an L-inf budget of 1 leaves more than 5% robust",
       "unbounded PGD leaves samples robust: the attack is not converging (masking or a bug)")
def _unbounded(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task) -> str | None:
    from bench.attacks import build_attack

    attack = build_attack("pgd", "linf", 0, {"steps": 20, "rel_stepsize": 0.1, "random_start": True})
    (out,) = attack(model, x, y, [1.0], task)
    with torch.no_grad():
        robust = float(task.correct(model(out.x_adv), y).float().mean())
    return f"{robust:.0%} of the probe samples survive an unbounded PGD" if robust > 0.05 else None


# --------------------------------------------------------------------------------------------------
# predictions: the clean predictions on the whole evaluated split
# --------------------------------------------------------------------------------------------------
def balanced_accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    """Mean recall over the classes present in ``labels``."""
    labels, preds = labels.reshape(-1), preds.reshape(-1)
    return float(np.mean([(preds[labels == c] == c).mean() for c in np.unique(labels)]))


@check("constant_predictor", "predictions", True,
       f"one class predicted for more than {CONSTANT_SHARE:.0%} of the evaluated split, or balanced accuracy "
       f"below chance + {CHANCE_MARGIN} (multi-label: mean AUC below 0.5 + {CHANCE_MARGIN})",
       "the model (nearly) ignores its input: an attack cannot flip a constant output, so robust accuracy "
       "says nothing about robustness")
def _constant_predictor(clean: CleanPredictions) -> str | None:
    n = len(clean.labels)
    if clean.multi_label:  # mostly all-negative predictions are normal there (ChestMNIST): use the AUC
        from bench.metrics import auc

        value = auc(clean.labels, clean.scores, clean.task_type)
        return f"mean clean AUC {value:.3f} is at chance" if value == value and value < 0.5 + CHANCE_MARGIN else None
    preds = clean.preds.reshape(-1)
    values, counts = np.unique(preds, return_counts=True)
    top = int(counts.argmax())
    if counts[top] / n > CONSTANT_SHARE:
        return f"predicts class {int(values[top])} for {counts[top] / n:.1%} of {n} samples"
    chance = 1.0 / max(2, clean.num_classes)
    balanced = balanced_accuracy(clean.labels, preds)
    if balanced < chance + CHANCE_MARGIN:
        return f"clean balanced accuracy {balanced:.3f} is at chance ({chance:.3f})"
    return None


@check("below_published_baseline", "predictions", True,
       f"clean ACC (medmnist's Evaluator) more than {BASELINE_MARGIN} below the dataset's published ResNet-18 ACC "
       "(bench/published.py)",
       "the model is much weaker than the published baseline for its dataset: its robustness is not comparable")
def _below_baseline(clean: CleanPredictions) -> str | None:
    from medmnist.evaluator import getACC

    published = published_baseline(clean.flag, clean.size)
    if published is None:
        return None
    labels = clean.labels if clean.multi_label else clean.labels.reshape(-1, 1)
    acc = float(getACC(labels, clean.scores, clean.task_type))
    if acc < published.acc - BASELINE_MARGIN:
        return f"clean ACC {acc:.3f} is more than {BASELINE_MARGIN} below the published {published.acc:.3f} ({published.source})"
    return None


# --------------------------------------------------------------------------------------------------
# rows: the summary rows of one evaluation
# --------------------------------------------------------------------------------------------------
@check("robust_acc_rises_with_eps", "rows", False, "an attack's robust accuracy higher at a larger epsilon",
       "robust accuracy rises with eps: a stronger budget found fewer adversarial examples")
def _rises(rows: list[dict]) -> set[int]:
    flagged = set()
    by_attack = defaultdict(list)
    for i, r in enumerate(rows):
        by_attack[(r["attack"], r["norm"])].append(i)
    for indices in by_attack.values():
        ordered = sorted(indices, key=lambda i: rows[i]["eps"])
        for prev, cur in zip(ordered, ordered[1:]):
            if rows[cur]["robust_acc"] > rows[prev]["robust_acc"] + 1e-9:
                flagged.add(cur)
    return flagged


@check("black_box_beats_white_box", "rows", False,
       f"a score/decision/transfer attack more than {TOLERANCE} below every gradient attack at the same epsilon",
       "a black-box attack beats every gradient attack: gradients are likely masked")
def _black_beats_white(rows: list[dict]) -> set[int]:
    flagged = set()
    white = defaultdict(list)
    for r in rows:
        if r.get("kind") == "gradient":
            white[(r["norm"], r["eps"])].append(r["robust_acc"])
    for i, r in enumerate(rows):
        best_white = white.get((r["norm"], r["eps"]))
        if r.get("kind") in BLACK_BOX_KINDS and best_white and r["robust_acc"] < min(best_white) - TOLERANCE:
            flagged.add(i)
    return flagged


# --------------------------------------------------------------------------------------------------
# running them
# --------------------------------------------------------------------------------------------------
def _scoped(scope: str) -> list[Check]:
    return [c for c in CHECKS.values() if c.scope == scope]


def run_model_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task) -> dict[str, str]:
    """``{flag: why}`` for the model checks that fire on this probe batch (use ~32 samples)."""
    model.eval()
    fired = {c.name: c.fn(model, x, y, task) for c in _scoped("model")}
    return {name: why for name, why in fired.items() if why}


def run_prediction_checks(clean: CleanPredictions) -> dict[str, str]:
    """``{flag: why}`` for the prediction checks that fire on the clean predictions of the evaluated split."""
    fired = {c.name: c.fn(clean) for c in _scoped("predictions")}
    return {name: why for name, why in fired.items() if why}


def attach_flags(rows: list[dict], model_flags: list[str]) -> list[dict]:
    """Add a ``flags`` field (';'-joined) to every row: model flags plus the row checks that fire on it."""
    per_row = defaultdict(list)
    for c in _scoped("rows"):
        for i in c.fn(rows):
            per_row[i].append(c.name)
    for i, r in enumerate(rows):
        r["flags"] = ";".join(list(model_flags) + per_row[i])
    return rows


def blocking_flags() -> set[str]:
    """The flags that keep a row out of the ranking."""
    return {c.name for c in CHECKS.values() if c.blocks_ranking}


def flag_meaning(name: str) -> str:
    return CHECKS[name].meaning if name in CHECKS else "raised by a check in bench/checks.py: look at this result before trusting it"
