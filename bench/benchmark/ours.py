"""medbench's own attacks as a ``Library`` entry, and the ways it can run a several-epsilon evaluation.

Ours runs the model in the engine's form (``bench.model_forms``, ``--ours-form``,
default auto: compiled and checked against eager), as ``scripts/attack.py``
does; the suite hands it that module. The batteries are a registry so another
engine can be compared in the same run (``--ours-battery``):

- ``engine``: ``bench.evaluate.attack_batch`` with a one-attack sequential
  battery, exactly as ``scripts/attack.py`` runs it (per-sample records,
  norms, scores): epsilons in increasing order, a sample fooled at a smaller
  epsilon keeps that example (the balls are nested), PGD drops each sample at
  its first fooling iterate (early stop). The default.
- ``loop``: the way a library user does it: every sample, every epsilon, all steps.

Each returns a boolean (n_eps, N) matrix: robust at that epsilon (a clean error
is never robust). The clean pass and the passes that score the adversarial
examples are part of the evaluation and are timed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from bench.attacks import build_attack
from bench.benchmark.profile import CLEAN_STAGE, PassTimer
from bench.benchmark.peers import Library, PgdSettings, Problem, SquareResult, SquareSettings


def pgd_attack(s: PgdSettings, early_stop: bool = False):
    """Our PGD; without early stop (pgd_fixed) every sample gets every step, like the peers' PGD."""
    return build_attack("pgd", "linf", s.seed, {"steps": s.steps, "rel_stepsize": s.rel_stepsize,
                                                "random_start": s.random_start, "early_stop": early_stop})


def _ours_pgd(_bench, problem: Problem, s: PgdSettings) -> torch.Tensor:
    attack = pgd_attack(s)
    return torch.cat([attack(problem.model, xb, yb, [s.eps], problem.task)[0].x_adv for xb, yb in problem.batches()])


def _ours_square(_bench, problem: Problem, s: SquareSettings) -> SquareResult:
    attack = build_attack("square", "linf", s.seed, {"max_queries": s.max_queries, "p_init": s.p_init, "loss": "margin"})
    outs = [attack(problem.model, xb, yb, [s.eps], problem.task)[0] for xb, yb in problem.batches()]
    return SquareResult(torch.cat([o.x_adv for o in outs]), torch.cat([o.queries.cpu() for o in outs]))


OURS = Library("ours", "bench", _ours_pgd, square=_ours_square)

BatteryFn = Callable[[Problem, PgdSettings, list[float]], torch.Tensor]
BATTERIES: dict[str, BatteryFn] = {}


def register_battery(name: str) -> Callable[[BatteryFn], BatteryFn]:
    def deco(fn: BatteryFn) -> BatteryFn:
        BATTERIES[name] = fn
        return fn

    return deco


def _correct(problem: Problem, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return problem.task.correct(problem.model(x), y)


@register_battery("engine")
def engine(problem: Problem, s: PgdSettings, epsilons: list[float]) -> torch.Tensor:
    from bench.evaluate import PlannedAttack, attack_batch

    plan = [PlannedAttack("pgd_linf", pgd_attack(s, early_stop=True), list(epsilons))]
    robust = torch.zeros(len(epsilons), len(problem.x), dtype=torch.bool)
    start = 0
    for xb, yb in problem.batches():
        rows = torch.arange(start, start + len(xb))
        for r in attack_batch(problem.model, plan, xb, yb, rows, rows, problem.task, "sequential", s.seed):
            ok = r["clean_correct"] and (not r["attacked"] or r["adv_correct"])
            robust[epsilons.index(r["eps"]), r["index"]] = ok
        start += len(xb)
    return robust


@register_battery("loop")
def loop(problem: Problem, s: PgdSettings, epsilons: list[float]) -> torch.Tensor:
    return evaluate_many(problem, [_ours_pgd(None, problem, s.at(eps)) for eps in epsilons])


def evaluate_many(problem: Problem, advs: list[torch.Tensor]) -> torch.Tensor:
    """(n_eps, N) robust: correct when clean (one clean pass) and on the adversarial example of that epsilon."""
    b = problem.batch_size
    clean = torch.cat([_correct(problem, problem.x[i : i + b], problem.y[i : i + b]) for i in range(0, len(problem.x), b)])
    rows = []
    for adv in advs:
        ok = torch.cat([_correct(problem, adv[i : i + b], problem.y[i : i + b]) for i in range(0, len(adv), b)])
        rows.append((clean & ok).cpu())
    return torch.stack(rows)


def standard_battery(model: torch.nn.Module, problem: Problem, epsilons: list[float], seed: int, form: str,
                     records_root: Path, overrides: tuple[str, ...] = (), profile: bool = False,
                     ) -> tuple[torch.Tensor, dict]:
    """Our standard battery exactly as ``medbench attack battery=standard`` runs it, end to end: the attacks of
    conf/battery/standard.yaml (sequential, nested epsilons), the model form prepared for this run (a fresh copy,
    so compilation or loading cached artefacts is inside the timing) and per-sample records written to disk.
    ``overrides`` are Hydra overrides of the battery (tests shrink its budgets; a measured row has none).
    ``profile``: time the model's passes per attack (``bench.benchmark.profile``; the report's "profile").
    Returns the (n_eps, N) robust matrix and what the run reports (form, preparation time, cache use)."""
    from bench.config import compose, to_dict
    from bench.evaluate import PlannedPasses, attack_batch
    from bench.experiment import build_plan
    from bench.model_forms import attack_model, frozen_copy, running_form
    from bench.records import RecordSet

    cfg = compose(["battery=standard", f"seed={seed}", *overrides])
    plan = build_plan(cfg)
    for planned in plan:  # the battery's own epsilons are 1, 2, 4, 8/255; a run may ask for others
        planned.epsilons = list(epsilons)
    device = problem.x.device
    fresh = frozen_copy(model, device)
    planned = PlannedPasses.of(plan, len(problem.x))
    prepared = attack_model(fresh, form, device, problem.x[:64], planned.total, planned.grad_share)
    form_of = partial(running_form, prepared.module, prepared.form)
    timer = PassTimer(prepared.module) if profile else None
    module = timer if timer is not None else prepared.module
    records = RecordSet.open(records_root, {"benchmark": "battery", "battery": to_dict(cfg.battery),
                                            "n": len(problem.x), "seed": seed})
    robust = torch.zeros(len(epsilons), len(problem.x), dtype=torch.bool)
    forms: set[str] = set()
    start = 0
    for xb, yb in problem.batches():
        rows = torch.arange(start, start + len(xb))
        if timer is not None:
            timer.stage(CLEAN_STAGE)
        batch = attack_batch(module, plan, xb, yb, rows, rows, problem.task, "sequential", seed,
                             form_of=form_of, on_stage=timer.stage if timer is not None else None)
        if timer is not None:
            timer.stage("records")
        records.write_batch(start, start + len(xb), batch)
        held: dict[tuple[int, float], bool] = {}  # (sample, eps) -> robust to every attack of the battery
        for r in batch:
            key = (r["index"], r["eps"])
            held[key] = held.get(key, True) and r["clean_correct"] and (not r["attacked"] or r["adv_correct"])
        for (index, eps), ok in held.items():
            robust[epsilons.index(eps), index] = ok
        forms.update(r["model_form"] for r in batch)
        start += len(xb)
    report = {"model_form": ";".join(sorted(forms)), "form_prepare_s": round(prepared.prepare_s, 1),
              "form_note": prepared.note, "attacks": [p.attack_id for p in plan]}
    if timer is not None:
        report["profile"] = timer.finish()
    return robust, report
