"""One adapter per attack library, in a registry: adding a library is one ``Library`` entry in ``PEERS``.

Every adapter runs the same attack as ours with the same budget: L-inf PGD
with the same epsilon, absolute step size (``rel_stepsize * eps``), number of
steps and random start (uniform in the eps-ball), cross-entropy loss, on [0, 1]
inputs (our model normalises inside, so no library is told about mean/std);
Square with the same epsilon, query budget (the initial stripes count as one
query, as ours do), ``p_init`` and margin loss. Where a library cannot be made
to match exactly, the ``mismatch`` text says how, and it is printed with the
results. Libraries are imported only when measured: a missing one costs a
one-line note and empty rows, never a crash.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from bench.tasks import Task


@dataclass(frozen=True)
class PgdSettings:
    """L-inf PGD budget shared by every library."""

    eps: float
    steps: int
    rel_stepsize: float
    random_start: bool
    seed: int

    @property
    def step(self) -> float:
        """Absolute step size: the number peers are given (ours takes the relative one; both are rel * eps)."""
        return self.rel_stepsize * self.eps

    def at(self, eps: float) -> "PgdSettings":
        return PgdSettings(eps, self.steps, self.rel_stepsize, self.random_start, self.seed)


@dataclass(frozen=True)
class SquareSettings:
    """Square (L-inf, margin loss) budget shared by every library."""

    eps: float
    max_queries: int
    p_init: float
    seed: int


@dataclass
class Problem:
    """What an adapter attacks: a model taking [0, 1] NCHW inputs, images and labels on the model's device."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    task: Task
    num_classes: int
    batch_size: int
    clean_correct: torch.Tensor | None = None  # (N,) bool on the CPU, computed once outside the timed code

    def batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        b = self.batch_size
        return [(self.x[i : i + b], self.y[i : i + b]) for i in range(0, len(self.x), b)]

    def correct_mask(self) -> torch.Tensor:
        """Which samples the model classifies correctly when clean (computed here if not given)."""
        if self.clean_correct is None:
            with torch.no_grad():
                logits = torch.cat([self.model(xb) for xb, _ in self.batches()])
            self.clean_correct = self.task.correct(logits, self.y).cpu()
        return self.clean_correct


@dataclass
class SquareResult:
    """Adversarial images and, per sample, the queries spent (None where the library does not say).

    ``success_queries(fooled)`` gives the queries of each sample in the boolean
    mask ``fooled`` (clean-correct samples the attack flipped), for libraries
    whose counts are only known once the outcome is (ART).
    """

    x_adv: torch.Tensor
    queries: torch.Tensor | None = None
    success_queries: Callable[[torch.Tensor], list[int]] | None = None


PgdFn = Callable[[object, Problem, PgdSettings], torch.Tensor]
PgdManyFn = Callable[[object, Problem, PgdSettings, list[float]], list[torch.Tensor]]
SquareFn = Callable[[object, Problem, SquareSettings], SquareResult]
BatteryFn = Callable[[object, Problem, "BatterySettings"], tuple[list[torch.Tensor], str]]


@dataclass
class Library:
    """An attack library: its package (for ``pip``), its import name and its attacks.

    Each function receives the imported module first. ``pgd_many`` is how the
    library itself evaluates several epsilons (default: one ``pgd`` per epsilon).
    """

    package: str
    module: str
    pgd: PgdFn
    square: SquareFn | None = None
    pgd_many: PgdManyFn | None = None
    battery: "BatteryFn | None" = None  # the library's several-epsilon battery (AutoAttack): (advs, note)
    mismatch: dict[str, str] = field(default_factory=dict)

    def load(self) -> object:
        """Import the library; raises ``LibraryMissing`` with a one-line note when it cannot be imported."""
        try:
            return importlib.import_module(self.module)
        except Exception as exc:  # ImportError, or a broken dependency raising anything else on import
            raise LibraryMissing(
                f"{self.package}: cannot import {self.module!r} ({type(exc).__name__}: {str(exc)[:120]}); "
                f"its rows are left empty. Install it with: pip install -e \".[compare]\""
            ) from None

    def run_pgd_many(self, lib: object, problem: Problem, settings: PgdSettings, epsilons: list[float]) -> list[torch.Tensor]:
        if self.pgd_many is not None:
            return self.pgd_many(lib, problem, settings, epsilons)
        return [self.pgd(lib, problem, settings.at(eps)) for eps in epsilons]


class LibraryMissing(RuntimeError):
    """A peer library is not installed or fails on import."""


# -- torchattacks -------------------------------------------------------------------
def _torchattacks_pgd(ta, problem: Problem, s: PgdSettings) -> torch.Tensor:
    attack = ta.PGD(problem.model, eps=s.eps, alpha=s.step, steps=s.steps, random_start=s.random_start)
    return torch.cat([attack(xb, yb) for xb, yb in problem.batches()])


def _torchattacks_square(ta, problem: Problem, s: SquareSettings) -> SquareResult:
    """torchattacks.Square; its per-sample query counts are read from ``attack_single_run``'s return value."""
    attack = ta.Square(problem.model, norm="Linf", eps=s.eps, n_queries=s.max_queries - 1, n_restarts=1,
                       p_init=s.p_init, loss="margin", resc_schedule=True, seed=s.seed, verbose=False)
    single_run = attack.attack_single_run
    captured: list[torch.Tensor] = []

    def counting_run(x, y):
        n_queries, adv = single_run(x, y)
        captured.append(n_queries)
        return n_queries, adv

    attack.attack_single_run = counting_run
    correct = problem.correct_mask()
    advs, queries = [], []
    for start, (xb, yb) in zip(range(0, len(problem.x), problem.batch_size), problem.batches()):
        captured.clear()
        advs.append(attack(xb, yb))
        q = torch.zeros(len(xb), dtype=torch.long)
        if captured:  # it attacks only the samples it finds correctly classified, in order
            q[correct[start : start + len(xb)]] = captured[0].long().cpu().view(-1)
        queries.append(q)
    return SquareResult(torch.cat(advs), torch.cat(queries))


# -- foolbox ------------------------------------------------------------------------
def _foolbox_pgd(fb, problem: Problem, s: PgdSettings) -> torch.Tensor:
    return _foolbox_pgd_many(fb, problem, s, [s.eps])[0]


def _foolbox_pgd_many(fb, problem: Problem, s: PgdSettings, epsilons: list[float]) -> list[torch.Tensor]:
    """All epsilons in one foolbox call (foolbox runs the attack once per epsilon inside it).

    foolbox's ``rel_stepsize`` gives each epsilon the step ``rel_stepsize * eps``, the number ours uses.
    """
    fmodel = fb.PyTorchModel(problem.model, bounds=(0, 1), device=problem.x.device)
    attack = fb.attacks.LinfPGD(rel_stepsize=s.rel_stepsize, steps=s.steps, random_start=s.random_start)
    per_batch = [attack(fmodel, xb, yb, epsilons=list(epsilons))[1] for xb, yb in problem.batches()]
    return [torch.cat([advs[e] for advs in per_batch]) for e in range(len(epsilons))]


# -- ART (adversarial-robustness-toolbox) -----------------------------------------------
def _art_classifier(problem: Problem):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=problem.model, loss=nn.CrossEntropyLoss(), input_shape=tuple(problem.x.shape[1:]),
        nb_classes=problem.num_classes, clip_values=(0.0, 1.0),
        device_type="gpu" if problem.x.is_cuda else "cpu",
    )


def _art_pgd(art, problem: Problem, s: PgdSettings) -> torch.Tensor:
    from art.attacks.evasion import ProjectedGradientDescent

    attack = ProjectedGradientDescent(
        _art_classifier(problem), norm=np.inf, eps=s.eps, eps_step=s.step, max_iter=s.steps, targeted=False,
        num_random_init=1 if s.random_start else 0, batch_size=problem.batch_size, verbose=False,
    )
    adv = attack.generate(x=problem.x.cpu().numpy(), y=problem.y.cpu().numpy())
    return torch.from_numpy(adv).to(problem.x.device)


def art_success_queries(predict_sizes: list[int], fooled_count: int) -> list[int] | None:
    """Queries of each sample ART's Square fooled, recovered from the sizes of its ``predict`` calls.

    ART 1.20 (L-inf) calls predict(all) then loss(robust) twice (clean, stripes), then per
    iteration predict(all), loss(robust), loss(candidates). Samples leave the robust set only
    when fooled, so the drop in its size between iterations counts the samples fooled by the
    previous candidate: stripes = query 1, iteration i's candidate = query i + 2. Samples fooled by
    the last candidate are the rest of ``fooled_count``. None if the calls do not follow this pattern.
    """
    if len(predict_sizes) < 3 or predict_sizes[1] != predict_sizes[2]:
        return None
    n, clean_robust = predict_sizes[0], predict_sizes[1]
    groups = [predict_sizes[i : i + 3] for i in range(3, len(predict_sizes), 3)]
    robust = []
    for g in groups:
        if g[0] != n or (len(g) == 3 and g[1] != g[2]) or len(g) == 2:
            return None
        if len(g) == 3:
            robust.append(g[1])
    counts: list[int] = []
    previous, query = clean_robust, 1
    for r in robust:
        counts += [query] * (previous - r)
        previous, query = r, query + 1
    counts += [query] * max(0, fooled_count - len(counts))
    return counts


def _art_square(art, problem: Problem, s: SquareSettings) -> SquareResult:
    from art.attacks.evasion import SquareAttack

    classifier = _art_classifier(problem)
    sizes: list[int] = []
    predict = classifier.predict

    def counting_predict(x, *args, **kwargs):
        sizes.append(len(x))
        return predict(x, *args, **kwargs)

    classifier.predict = counting_predict
    attack = SquareAttack(classifier, norm=np.inf, max_iter=s.max_queries - 1, eps=s.eps, p_init=s.p_init,
                          nb_restarts=1, batch_size=problem.batch_size, verbose=False)
    adv = attack.generate(x=problem.x.cpu().numpy(), y=problem.y.cpu().numpy())
    return SquareResult(torch.from_numpy(adv).to(problem.x.device),
                        success_queries=lambda fooled: art_success_queries(sizes, int(fooled.sum())) or [])


# -- adv-lib -------------------------------------------------------------------------
def _adv_lib_pgd(adv_lib, problem: Problem, s: PgdSettings) -> torch.Tensor:
    from adv_lib.attacks import pgd_linf

    return torch.cat([
        pgd_linf(problem.model, xb, yb, ε=s.eps, targeted=False, steps=s.steps, random_init=s.random_start,
                 restarts=1, loss_function="ce", absolute_step_size=s.step)
        for xb, yb in problem.batches()
    ])


@dataclass(frozen=True)
class BatterySettings:
    """The several-epsilon battery budget: ours is conf/battery/standard.yaml, the peer AutoAttack's standard."""

    epsilons: tuple[float, ...]
    seed: int


AUTOATTACK_MIN_CLASSES_FOR_DLR = 4  # the targeted DLR loss reads the 3rd and 4th largest logits


def autoattack_attacks(ta, model: nn.Module, eps: float, num_classes: int, seed: int) -> tuple[object, str]:
    """torchattacks' AutoAttack, standard version (APGD-CE, APGD-T, FAB-T, Square 5,000), as its users run it,
    and what differs. With fewer than 4 classes APGD-T cannot run (its targeted DLR loss indexes the 3rd and
    4th logits: an IndexError on a binary task), so it is left out and the rest run as AutoAttack runs them."""
    if num_classes >= AUTOATTACK_MIN_CLASSES_FOR_DLR:
        return ta.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=num_classes, seed=seed), ""
    attacks = [
        ta.APGD(model, eps=eps, norm="Linf", seed=seed, loss="ce", n_restarts=1),
        ta.FAB(model, eps=eps, norm="Linf", seed=seed, multi_targeted=True, n_classes=num_classes, n_restarts=1),
        ta.Square(model, eps=eps, norm="Linf", seed=seed, n_queries=5000, n_restarts=1),
    ]
    return ta.MultiAttack(attacks), (f"{num_classes} classes: APGD-T left out (its targeted DLR loss needs >= "
                                     f"{AUTOATTACK_MIN_CLASSES_FOR_DLR}); APGD-CE, FAB-T and Square 5,000 as in "
                                     f"AutoAttack's standard version")


def _torchattacks_autoattack(ta, problem: Problem, s: BatterySettings) -> tuple[list[torch.Tensor], str]:
    """AutoAttack once per epsilon (as its users run it), every batch; the adversarial images per epsilon."""
    advs, note = [], ""
    for eps in s.epsilons:
        attack, note = autoattack_attacks(ta, problem.model, eps, problem.num_classes, s.seed)
        advs.append(torch.cat([attack(xb, yb).detach() for xb, yb in problem.batches()]))
    return advs, note


PEERS: dict[str, Library] = {
    "torchattacks": Library(
        "torchattacks", "torchattacks", _torchattacks_pgd, square=_torchattacks_square,
        battery=_torchattacks_autoattack,
        mismatch={
            "battery": "AutoAttack (standard) where ours runs the standard battery: APGD-T and FAB-T where ours runs "
                       "APGD with the margin loss and FMN; every sample at every epsilon (ours: nested epsilons)",
            "pgd": "returns the last iterate (ours keeps the first that fools)",
            "square": "n_queries = queries - 1 (its initial query is extra); one square window position per "
                      "iteration for the whole batch (ours: one per sample)",
        }),
    "foolbox": Library(
        "foolbox", "foolbox", _foolbox_pgd, pgd_many=_foolbox_pgd_many,
        mismatch={"pgd": "returns the last iterate; pgd_4eps passes all epsilons in one call (foolbox loops inside)"}),
    "adversarial-robustness-toolbox": Library(
        "adversarial-robustness-toolbox", "art", _art_pgd, square=_art_square,
        mismatch={
            "pgd": "numpy in and out (copies per call); last iterate; an extra forward at the end to log success",
            "square": "max_iter = queries - 1; keeps the initial stripes only if they raise the loss (ours always "
                      "starts from them); per iteration it also predicts on every sample (3 model calls; queries to "
                      "success recovered from their sizes); one window position per iteration for the whole batch",
        }),
    "adv-lib": Library(
        "adv-lib", "adv_lib", _adv_lib_pgd,
        mismatch={"pgd": "never checks the iterate after the last step (returns the clean image where no "
                         "earlier iterate fooled): one step weaker than the others"}),
}
# Short names accepted on the command line.
ALIASES = {"art": "adversarial-robustness-toolbox", "adv_lib": "adv-lib", "advlib": "adv-lib"}
