"""Sanity checks attached to every result as flags (modelled on AutoAttack's checks).

A flag does not stop a run: it marks a number that should not be trusted
without a look. Model checks probe the classifier on a few samples; result
checks read the summary rows. Each check is one registered function.

Flags:
- ``zero_grad``: input gradients are zero or NaN for most samples (gradient masking).
- ``softmax_output``: outputs look like probabilities, not logits (losses saturate).
- ``nondeterministic``: two identical calls give different outputs (randomised defense).
- ``unbounded_eps_not_zero``: PGD with an unbounded L-inf budget leaves samples robust.
- ``black_box_beats_white_box``: a score/decision/transfer attack beats every gradient attack.
- ``robust_acc_rises_with_eps``: an attack is more accurate at a larger epsilon.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch
import torch.nn as nn

from bench.tasks import Task

ModelCheck = Callable[[nn.Module, torch.Tensor, torch.Tensor, Task], bool]
RowCheck = Callable[[list[dict]], dict[int, str]]
MODEL_CHECKS: dict[str, ModelCheck] = {}
ROW_CHECKS: dict[str, RowCheck] = {}

BLACK_BOX_KINDS = ("score", "decision", "transfer")
TOLERANCE = 0.01  # one point: smaller differences are noise on test sets of ~150 images


def model_check(name: str):
    def deco(fn: ModelCheck) -> ModelCheck:
        MODEL_CHECKS[name] = fn
        return fn

    return deco


def row_check(name: str):
    def deco(fn: RowCheck) -> RowCheck:
        ROW_CHECKS[name] = fn
        return fn

    return deco


@model_check("zero_grad")
def _zero_grad(model, x, y, task) -> bool:
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = task.loss(model(x), task.labels_as_targets(y), reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    dead = (grad.flatten(1).abs().amax(1) == 0) | ~torch.isfinite(grad.flatten(1)).all(1)
    return bool(dead.float().mean() > 0.5)


@model_check("softmax_output")
def _softmax_output(model, x, y, task) -> bool:
    with torch.no_grad():
        out = model(x)
    in_unit = bool(((out >= 0) & (out <= 1)).all())
    if task.multi_label:
        return in_unit
    return in_unit and bool(torch.allclose(out.sum(1), torch.ones(len(out)), atol=1e-3))


@model_check("nondeterministic")
def _nondeterministic(model, x, y, task) -> bool:
    with torch.no_grad():
        return not torch.allclose(model(x), model(x), rtol=1e-4, atol=1e-5)


@model_check("unbounded_eps_not_zero")
def _unbounded(model, x, y, task) -> bool:
    from bench.attacks import build_attack

    attack = build_attack("pgd", "linf", 0, {"steps": 20, "rel_stepsize": 0.1, "random_start": True})
    (out,) = attack(model, x, y, [1.0], task)
    with torch.no_grad():
        robust = task.correct(model(out.x_adv), y).float().mean()
    return bool(robust > 0.05)


def run_model_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task) -> list[str]:
    """Names of the model checks that fire on this batch (use ~32 samples)."""
    model.eval()
    return [name for name, check in MODEL_CHECKS.items() if check(model, x, y, task)]


@row_check("robust_acc_rises_with_eps")
def _rises(rows: list[dict]) -> dict[int, str]:
    flagged = {}
    by_attack = defaultdict(list)
    for i, r in enumerate(rows):
        by_attack[(r["attack"], r["norm"])].append(i)
    for indices in by_attack.values():
        ordered = sorted(indices, key=lambda i: rows[i]["eps"])
        for prev, cur in zip(ordered, ordered[1:]):
            if rows[cur]["robust_acc"] > rows[prev]["robust_acc"] + 1e-9:
                flagged[cur] = "robust_acc_rises_with_eps"
    return flagged


@row_check("black_box_beats_white_box")
def _black_beats_white(rows: list[dict]) -> dict[int, str]:
    flagged = {}
    white = defaultdict(list)
    for r in rows:
        if r.get("kind") == "gradient":
            white[(r["norm"], r["eps"])].append(r["robust_acc"])
    for i, r in enumerate(rows):
        best_white = white.get((r["norm"], r["eps"]))
        if r.get("kind") in BLACK_BOX_KINDS and best_white and r["robust_acc"] < min(best_white) - TOLERANCE:
            flagged[i] = "black_box_beats_white_box"
    return flagged


def attach_flags(rows: list[dict], model_flags: list[str]) -> list[dict]:
    """Add a ``flags`` field (';'-joined) to every row: model flags plus the row checks that fire on it."""
    per_row = defaultdict(list)
    for check in ROW_CHECKS.values():
        for i, flag in check(rows).items():
            per_row[i].append(flag)
    for i, r in enumerate(rows):
        r["flags"] = ";".join(model_flags + per_row[i])
    return rows
