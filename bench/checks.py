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
    scope: str  # model | predictions | rows | evaluation
    blocks_ranking: bool
    threshold: str
    meaning: str
    fn: Callable
    unreliable: bool = False  # a flaw of the evaluation (not of the model): sets the row's `unreliable` column


CHECKS: Registry[Check] = Registry("check")


def check(name: str, scope: str, blocks_ranking: bool, threshold: str, meaning: str, unreliable: bool = False):
    """Register ``fn`` as a check. Model/prediction/evaluation checks return why they fired (or None); row
    checks a set of row indices."""

    def deco(fn: Callable) -> Callable:
        CHECKS.add(name, Check(name, scope, blocks_ranking, threshold, meaning, fn, unreliable))
        return fn

    return deco


def _attacked_view(model: nn.Module) -> nn.Module:
    """What gradient attacks differentiate: a defense's declared view (straight-through, EoT), else the model."""
    from bench.defenses.adaptive import gradient_view

    return gradient_view(model)


# --------------------------------------------------------------------------------------------------
# model: probe the classifier (a defense through the view its declaration gives gradient attacks)
# --------------------------------------------------------------------------------------------------
@check("zero_grad", "model", True, "input gradient zero or non-finite for more than half of the probe samples",
       "gradients vanish (masking): gradient attacks are blind, robust accuracy is likely overestimated",
       unreliable=True)
def _zero_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task) -> str | None:
    model = _attacked_view(model)
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = task.loss(model(x), task.labels_as_targets(y), reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    dead = (grad.flatten(1).abs().amax(1) == 0) | ~torch.isfinite(grad.flatten(1)).all(1)
    share = float(dead.float().mean())
    return f"zero or non-finite input gradient for {share:.0%} of {len(x)} probe samples" if share > 0.5 else None


@check("softmax_output", "model", True, "every output in [0, 1] (and rows summing to 1 for single-label tasks)",
       "model outputs probabilities: losses saturate, gradient attacks can be weakened", unreliable=True)
def _softmax_output(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task) -> str | None:
    with torch.no_grad():
        out = model(x)
    in_unit = bool(((out >= 0) & (out <= 1)).all())
    if not task.multi_label:
        in_unit = in_unit and bool(torch.allclose(out.sum(1), torch.ones(len(out)), atol=1e-3))
    return "outputs look like probabilities, not logits" if in_unit else None


@check("nondeterministic", "model", True, "two identical forward passes differ (rtol 1e-4, atol 1e-5); not run "
       "for a defense declared randomised (it gets EoT instead)",
       "randomised outputs from a model declared deterministic: no EoT was run, the number cannot be trusted",
       unreliable=True)
def _nondeterministic(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task) -> str | None:
    from bench.defenses import declaration_of

    if declaration_of(model).randomised:
        return None
    with torch.no_grad():
        same = torch.allclose(model(x), model(x), rtol=1e-4, atol=1e-5)
    return None if same else "two identical forward passes gave different outputs"


# Unbounded PGD twice; a probe sample counts as robust only if it survives both (any adversarial example in the
# eps-1 ball is a witness). The first starts from a random point of the ball (steps 0.1, cross-entropy), which is
# uniform noise, where some models saturate on one class with a flat gradient; the second starts from the image
# (steps 0.01) and climbs the CW margin, whose gradient does not vanish when the softmax saturates in float32.
# MobileNetV3-Small on BreastMNIST (seed 1, 32 probe samples): from noise 66% "survived" (the class-1 share; the
# model calls all noise class 1), from the image with cross-entropy 6% (gradient 0 at p = 1), with the margin none;
# the battery had broken all of them at 1/255. A masked gradient (zero, shattered) survives both.
UNBOUNDED_STARTS = ({"rel_stepsize": 0.1, "random_start": True, "loss": "ce"},
                    {"rel_stepsize": 0.01, "random_start": False, "loss": "margin"})


@check("unbounded_eps_not_zero", "model", True, "PGD (20 steps) with an L-inf budget of 1, from a random start "
       "(steps 0.1, cross-entropy) and from the image (steps 0.01, CW margin), leaves more than 5% robust to both",
       "unbounded PGD leaves samples robust: the attack is not converging (masking or a bug)", unreliable=True)
def _unbounded(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task) -> str | None:
    from bench.attacks import build_attack

    robust = torch.ones(len(x), dtype=torch.bool)
    for start in UNBOUNDED_STARTS:
        attack = build_attack("pgd", "linf", 0, {"steps": 20, **start})
        (out,) = attack(_attacked_view(model), x, y, [1.0], task)
        with torch.no_grad():
            robust &= task.correct(model(out.x_adv), y).cpu()
    share = float(robust.float().mean())
    return f"{share:.0%} of the probe samples survive an unbounded PGD from both starts" if share > 0.05 else None


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
       "(bench/published.py; a volume flag's is ResNet-18 + ACS)",
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
# evaluation: the Carlini et al. (2019) checklist and AutoAttack's checks, on the finished evaluation
# --------------------------------------------------------------------------------------------------
EVAL_PROBE = 32  # samples an evaluation check re-attacks (the robust ones first, by index)
NOISE_DRAWS = 1000  # random-noise draws per sample
BREAKABLE_EPS = 8 / 255  # the budget at which an undefended (or de-randomised) model must fall
BREAKABLE_SHARE = 0.10  # ... leaving at most this share of the probe robust


@dataclass
class EvaluationProbe:
    """What the evaluation checks read: the defended model, its backbone, the records and the battery's budget."""

    model: nn.Module  # as evaluated (the defense around the classifier)
    backbone: nn.Module | None  # the undefended classifier of the same recipe and seed (None: the model is it)
    frame: object  # pandas DataFrame of the per-sample records
    images: torch.Tensor  # the evaluated split, in [0, 1]
    labels: torch.Tensor
    task: Task
    norm: str
    epsilons: list[float]
    steps: int  # the battery's APGD iterations
    seed: int
    device: str = "cpu"

    def robust_at(self, eps: float) -> list[int]:
        """Indices (in the split) still robust after everything run at ``eps``."""
        f = self.frame
        at = f[(f["norm"] == self.norm) & (f["eps"] == eps)]
        broken = set(at[at["attacked"] & at["success"].fillna(False).astype(bool)]["index"])
        correct = set(at[at["clean_correct"]]["index"])
        return sorted(correct - broken)

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices[:EVAL_PROBE], dtype=torch.long)
        return self.images[idx].to(self.device), self.labels[idx].to(self.device)

    def apgd(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int) -> int:
        """How many of ``x`` stay correctly classified by ``model`` after APGD-CE with ``steps`` iterations."""
        from bench.attacks import build_attack
        from bench.defenses.adaptive import gradient_view

        if len(x) == 0:
            return 0
        attack = build_attack("apgd", self.norm, self.seed, {"steps": steps, "loss": "ce"})
        (out,) = attack(gradient_view(model), x, y, [eps], self.task)
        with torch.no_grad():
            return int(self.task.correct(model(out.x_adv), y).sum())


@check("more_iterations_help", "evaluation", True,
       f"APGD-CE with twice the battery's iterations breaks more than one of (up to {EVAL_PROBE}) samples left "
       "robust, at any epsilon", "the attacks had not converged: more iterations lower robust accuracy",
       unreliable=True)
def _more_iterations(p: EvaluationProbe) -> str | None:
    for eps in p.epsilons:
        x, y = p.batch(p.robust_at(eps))
        broken = len(x) - p.apgd(p.model, x, y, eps, 2 * p.steps)
        if broken > 1:
            return f"{2 * p.steps}-step APGD-CE broke {broken} of {len(x)} samples left robust at eps {eps:.4g}"
    return None


@check("black_box_beats_white_box_per_sample", "evaluation", True,
       "a black-box, transfer or random-noise attack breaks at least one sample that every white-box attack left "
       "robust", "gradient attacks miss what gradient-free ones find: gradients are masked", unreliable=True)
def _black_beats_white_per_sample(p: EvaluationProbe) -> str | None:
    f = p.frame
    hits = f[(f["norm"] == p.norm) & f["attacked"] & f["success"].fillna(False).astype(bool)]
    white = set(zip(hits[~hits["kind"].isin(BLACK_BOX_KINDS)]["index"], hits[~hits["kind"].isin(BLACK_BOX_KINDS)]["eps"]))
    black = hits[hits["kind"].isin(BLACK_BOX_KINDS)]
    only = [(i, e, a) for i, e, a in zip(black["index"], black["eps"], black["attack"]) if (i, e) not in white]
    if only:
        attacks = sorted({a for _, _, a in only})
        return f"{len(only)} (sample, eps) pair(s) broken only by {', '.join(attacks)}"
    return None


@check("random_noise_breaks", "evaluation", True,
       f"{NOISE_DRAWS} random corners of the L-inf ball per sample (up to {EVAL_PROBE} samples left robust at the "
       "largest epsilon) misclassify one", "random noise finds what the attacks missed: gradients are masked",
       unreliable=True)
def _random_noise(p: EvaluationProbe) -> str | None:
    if p.norm != "linf" or not p.epsilons:
        return None
    eps = max(p.epsilons)
    x, y = p.batch(p.robust_at(eps))
    if len(x) == 0:
        return None
    generator = torch.Generator(device=x.device).manual_seed(p.seed)
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    chunk = max(1, 4096 // len(x))
    with torch.no_grad():
        for start in range(0, NOISE_DRAWS, chunk):
            k = min(chunk, NOISE_DRAWS - start)
            xs = x.repeat(k, *[1] * (x.dim() - 1))
            signs = torch.randint(0, 2, xs.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
            noisy = (xs + eps * signs).clamp(0, 1)
            wrong = ~p.task.correct(p.model(noisy), y.repeat(k, *[1] * (y.dim() - 1)))
            fooled |= wrong.view(k, len(x)).any(0)
    if fooled.any():
        return f"random noise misclassified {int(fooled.sum())} of {len(x)} samples left robust at eps {eps:.4g}"
    return None


def _breakable(model: nn.Module, p: EvaluationProbe, what: str) -> str | None:
    correct = [i for i in range(len(p.images)) if i in set(p.frame[p.frame["clean_correct"]]["index"])]
    x, y = p.batch(correct)
    if len(x) == 0:
        return None
    eps = max([BREAKABLE_EPS, *p.epsilons]) if p.norm == "linf" else max(p.epsilons)
    robust = p.apgd(model, x, y, eps, p.steps)
    if robust > BREAKABLE_SHARE * len(x):
        return f"{what}: {robust} of {len(x)} samples survive APGD-CE at eps {eps:.4g}"
    return None


@check("backbone_not_breakable", "evaluation", True,
       f"APGD-CE at max(8/255, the largest epsilon) leaves more than {BREAKABLE_SHARE:.0%} of {EVAL_PROBE} "
       "clean-correct samples robust on the undefended backbone (the model itself when undefended)",
       "the attack cannot even break the undefended model: the attack or the model wrapper is broken",
       unreliable=True)
def _backbone_not_breakable(p: EvaluationProbe) -> str | None:
    return _breakable(p.backbone if p.backbone is not None else p.model, p, "undefended backbone")


@check("fixed_randomness_not_breakable", "evaluation", True,
       f"for a randomised defense with its noise fixed (a deterministic function), APGD-CE at max(8/255, the largest "
       f"epsilon) leaves more than {BREAKABLE_SHARE:.0%} of {EVAL_PROBE} clean-correct samples robust",
       "even without randomness the defense is not broken: the robustness is not (only) from the randomness, or the "
       "attack is failing", unreliable=True)
def _fixed_randomness(p: EvaluationProbe) -> str | None:
    from bench.defenses import Defense, declaration_of

    if not declaration_of(p.model).randomised or not isinstance(p.model, Defense):
        return None
    fixed = p.model.view(fixed_seed=p.seed)
    return _breakable(fixed.gradient_view(), p, "randomness fixed")


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


def run_evaluation_checks(probe: EvaluationProbe) -> dict[str, str]:
    """``{flag: why}`` for the evaluation checks that fire on a finished evaluation."""
    probe.model.eval()
    fired = {c.name: c.fn(probe) for c in _scoped("evaluation")}
    return {name: why for name, why in fired.items() if why}


def attach_flags(rows: list[dict], model_flags: list[str]) -> list[dict]:
    """Add ``flags`` (';'-joined: model and evaluation flags plus the row checks that fire on it) and
    ``unreliable`` (whether any of them is an evaluation flaw) to every row."""
    per_row = defaultdict(list)
    for c in _scoped("rows"):
        for i in c.fn(rows):
            per_row[i].append(c.name)
    for i, r in enumerate(rows):
        flags = list(model_flags) + per_row[i]
        r["flags"] = ";".join(flags)
        r["unreliable"] = any(CHECKS[f].unreliable for f in flags if f in CHECKS)
    return rows


def blocking_flags() -> set[str]:
    """The flags that keep a row out of the ranking."""
    return {c.name for c in CHECKS.values() if c.blocks_ranking}


def flag_meaning(name: str) -> str:
    return CHECKS[name].meaning if name in CHECKS else "raised by a check in bench/checks.py: look at this result before trusting it"
