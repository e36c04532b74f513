"""Run a battery over a split batch by batch, writing per-sample records; summarise records into rows.

Only samples classified correctly when clean are attacked (the others are
already non-robust). Two battery modes:

- ``independent``: every attack sees every clean-correct sample; each attack's
  row is its own robust accuracy, and the battery row is the per-sample worst
  case.
- ``sequential`` (AutoAttack's way): each attack only sees the samples still
  robust after the attacks before it, at that epsilon; each attack's row is the
  robust accuracy *after* it, so the last one is the battery's worst case.

Batches are independent (every attack call is seeded), so an evaluation can be
cut anywhere into batches, resumed after a kill, or split into shards, and
still produce the numbers of one uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from bench import metrics
from bench.attacks import Attack, AttackOutput, check_threat_model, flat_norm
from bench.attacks.base import Attack as _Base
from bench.data import Split
from bench.model_forms import AUTO, DEFAULT_GRAD_SHARE, attack_model, running_form
from bench.progress import progress
from bench.records import RecordSet
from bench.tasks import Task

BATTERY_MODES = ("independent", "sequential")
L0_TOLERANCE = 1e-6  # a value counts as changed when it moved by more than float noise


@dataclass
class PlannedAttack:
    """One attack of an experiment, with its epsilons and their readable labels."""

    attack_id: str
    attack: Attack
    epsilons: list[float]
    eps_labels: dict[float, str] = field(default_factory=dict)

    @property
    def one_pass(self) -> bool:
        """True when the attack serves every epsilon from one run (it overrides run_epsilons)."""
        return type(self.attack).run_epsilons is not _Base.run_epsilons

    def label(self, eps: float) -> str:
        return self.eps_labels.get(eps, f"{eps:.6g}")


@dataclass(frozen=True)
class PlannedPasses:
    """What a run will ask of the model, at most: sample-passes in all, and the share that needs an input
    gradient. ``eval.model_form=auto`` weighs compiling against the first and times forms on the second."""

    total: float
    grad_share: float

    @classmethod
    def of(cls, plan: list[PlannedAttack], n_samples: int) -> "PlannedPasses":
        per_sample = [(p.attack.planned_passes * len(p.epsilons), p.attack.needs_input_gradient) for p in plan]
        total = sum(passes for passes, _ in per_sample)
        with_gradient = sum(passes for passes, needs in per_sample if needs)
        return cls(n_samples * total, with_gradient / total if total else DEFAULT_GRAD_SHARE)


@dataclass
class Examples:
    """Clean and adversarial images of the first few samples, for example grids (W&B, figures)."""

    clean: np.ndarray                     # (k, C, H, W)
    labels: np.ndarray
    clean_pred: np.ndarray
    norm: str
    epsilons: list[float]
    eps_labels: list[str]
    adv: np.ndarray = field(init=False)   # (E, k, C, H, W): the worst-case example at each epsilon
    adv_pred: np.ndarray = field(init=False)
    _l2: np.ndarray = field(init=False)
    _fooled: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        e, k = len(self.epsilons), len(self.clean)
        self.adv = np.repeat(self.clean[None], e, axis=0).copy()
        self.adv_pred = np.repeat(np.asarray(self.clean_pred)[None], e, axis=0).copy()
        self._l2 = np.full((e, k), np.inf)
        self._fooled = np.zeros((e, k), dtype=bool)

    def offer(self, eps: float, rows: np.ndarray, x_adv: np.ndarray, pred: np.ndarray, success: np.ndarray, l2: np.ndarray) -> None:
        """Keep, per sample, the smallest successful example (or the latest unsuccessful one)."""
        if eps not in self.epsilons:
            return
        e = self.epsilons.index(eps)
        for j, i in enumerate(rows):
            if i >= len(self.clean):
                continue
            better = (success[j] and (not self._fooled[e, i] or l2[j] < self._l2[e, i])) or not self._fooled[e, i]
            if better:
                self.adv[e, i], self.adv_pred[e, i] = x_adv[j], pred[j]
                self._fooled[e, i], self._l2[e, i] = bool(success[j]), float(l2[j])

    def save(self, path, meta: dict[str, str | int]) -> None:
        np.savez_compressed(
            path, clean=self.clean, adv=self.adv, eps=np.asarray(self.epsilons, dtype=np.float64),
            eps_labels=np.asarray(self.eps_labels), labels=np.asarray(self.labels),
            clean_pred=np.asarray(self.clean_pred), adv_pred=np.asarray(self.adv_pred),
            **{k: np.asarray(str(v)) for k, v in meta.items()},
        )


@dataclass
class SmallerEpsSuccesses:
    """Per batch row, an example that fooled the model at a smaller epsilon of the current attack.

    Balls are nested: an example within eps1 of x is within every eps2 > eps1, so
    a sample one attack broke at a smaller epsilon is broken at the larger ones
    by the same example, with no further queries. ``attack_batch`` fills this
    after each epsilon; ``_attack_rows`` reuses it (untargeted attacks only: a
    targeted attack's goal can depend on which samples it is given).
    """

    x_adv: torch.Tensor
    queries: torch.Tensor
    fooled: torch.Tensor

    @classmethod
    def empty(cls, x: torch.Tensor) -> "SmallerEpsSuccesses":
        return cls(x.clone(), torch.zeros(len(x), dtype=torch.float32), torch.zeros(len(x), dtype=torch.bool, device=x.device))

    def add(self, idx: torch.Tensor, x_adv: torch.Tensor, queries: torch.Tensor | None, success: torch.Tensor) -> None:
        """Keep the examples of rows ``idx`` that fooled the model now and had no example yet."""
        pick = success & ~self.fooled[idx]
        new = idx[pick]
        if len(new) == 0:
            return
        self.x_adv[new], self.fooled[new] = x_adv[pick], True
        if queries is not None:
            self.queries[new.cpu()] = queries[pick.to(queries.device)].float().cpu()


def _attack_rows(model, planned: PlannedAttack, x, y, task, masks: dict[float, torch.Tensor],
                 smaller: SmallerEpsSuccesses | None = None):
    """Run ``planned`` on the masked rows of a batch; yields (eps, local row indices, AttackOutput, criterion).

    A one-pass attack runs once on the union of the masks, but each epsilon
    reports only its own masked rows: in a sequential battery a sample already
    broken at that epsilon is not attacked there. Other attacks run epsilon by
    epsilon in increasing order; with ``smaller`` (filled by the caller between
    epsilons), rows already fooled at a smaller epsilon reuse that example.
    """
    if planned.one_pass:
        union = torch.stack([masks[e] for e in planned.epsilons]).any(0)
        idx = union.nonzero().view(-1)
        if len(idx) == 0:
            return
        outputs = planned.attack(model, x[idx], y[idx], planned.epsilons, task)
        criterion = planned.attack.last_criterion
        for out in outputs:
            keep = masks[out.eps][idx]
            if not keep.any():
                continue
            yield out.eps, idx[keep], criterion.subset(keep.nonzero().view(-1)), replace(
                out, x_adv=out.x_adv[keep], seconds=out.seconds * float(keep.sum()) / len(idx),
                queries=None if out.queries is None else out.queries[keep.to(out.queries.device)],
            )
        return
    for eps in sorted(planned.epsilons):
        idx = masks[eps].nonzero().view(-1)
        if len(idx) == 0:
            continue
        if smaller is None or planned.attack.targeted:
            (out,) = planned.attack(model, x[idx], y[idx], [eps], task)
            yield eps, idx, planned.attack.last_criterion, out
            continue
        out = _attack_reusing_smaller_eps(model, planned, x, y, task, eps, idx, smaller)
        yield eps, idx, planned.attack.criterion(model, x[idx], y[idx], task), out


def _attack_reusing_smaller_eps(model, planned: PlannedAttack, x, y, task, eps: float, idx: torch.Tensor,
                                smaller: SmallerEpsSuccesses) -> AttackOutput:
    """Rows ``idx`` at ``eps``: those fooled at a smaller epsilon keep that example (and its queries), the
    others are attacked; cost per sample is the attacked rows' cost spread over all of ``idx``."""
    reused = smaller.fooled[idx]
    todo = idx[~reused]
    x_adv = smaller.x_adv[idx].clone()
    queries = smaller.queries[idx.cpu()].clone()
    seconds = forwards = backwards = 0.0
    reports_queries = planned.attack.max_queries is not None
    if len(todo):
        (fresh,) = planned.attack(model, x[todo], y[todo], [eps], task)
        x_adv[~reused] = fresh.x_adv
        share = len(todo) / len(idx)
        seconds, forwards, backwards = fresh.seconds, fresh.forwards * share, fresh.backwards * share
        reports_queries = fresh.queries is not None
        if reports_queries:
            queries[(~reused).cpu()] = fresh.queries.float().cpu()
    check_threat_model(x[idx], x_adv, eps, planned.attack.norm, planned.attack.name)
    return AttackOutput(eps, x_adv, seconds, queries if reports_queries else None, forwards, backwards)


def _as_list(t: torch.Tensor) -> list:
    return t.cpu().tolist()


def attack_batch(
    model: nn.Module, plan: Sequence[PlannedAttack], x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor,
    sample_ids: torch.Tensor, task: Task, mode: str, seed: int, examples: Examples | None = None,
    on_stage: Callable[[str], None] | None = None, form_of: Callable[[], str] | None = None,
) -> list[dict]:
    """Attack one batch with the whole plan; one record per (sample, attack, epsilon).

    ``form_of`` names the model form running now; each attack's records say the form it ended in (a compiled
    form that fell back to eager mid-attack says so), and the rows report it.
    """
    with torch.no_grad():
        clean_logits = model(x)
    cc = task.correct(clean_logits, y)
    clean_pred = _as_list(task.predict(clean_logits))
    clean_scores = _as_list(task.scores(clean_logits).float())
    labels = _as_list(y)
    b = len(x)
    base = [
        {"index": int(rows[i]), "sample_id": int(sample_ids[i]), "label": labels[i], "clean_pred": clean_pred[i],
         "clean_correct": bool(cc[i]), "clean_scores": clean_scores[i], "seed": seed}
        for i in range(b)
    ]
    still_robust: dict[tuple[str, float], torch.Tensor] = {}
    records: list[dict] = []
    for stage, p in enumerate(plan):
        if on_stage is not None:
            on_stage(p.attack_id)
        masks = {}
        for eps in p.epsilons:
            key = (p.attack.norm, eps)
            still_robust.setdefault(key, cc.clone())
            masks[eps] = still_robust[key] if mode == "sequential" else cc
        per_eps = {eps: [dict(base[i], attack=p.attack_id, kind=p.attack.kind, stage=stage, norm=p.attack.norm,
                              eps=eps, eps_label=p.label(eps), attacked=False) for i in range(b)] for eps in p.epsilons}
        smaller = SmallerEpsSuccesses.empty(x)
        for eps, idx, criterion, out in _attack_rows(model, p, x, y, task, masks, smaller):
            with torch.no_grad():
                adv_logits = model(out.x_adv)
            adv_correct = task.correct(adv_logits, y[idx])
            success = criterion.is_adversarial(adv_logits)
            delta = (out.x_adv - x[idx]).float()
            linf, l2 = _as_list(flat_norm(delta, "linf")), _as_list(flat_norm(delta, "l2"))
            l0 = _as_list((delta.abs() > L0_TOLERANCE).flatten(1).sum(1))
            pred, scores = _as_list(task.predict(adv_logits)), _as_list(task.scores(adv_logits).float())
            queries = None if out.queries is None else _as_list(out.queries.float())
            share = out.seconds / len(idx)
            for j, i in enumerate(idx.tolist()):
                per_eps[eps][i].update(
                    attacked=True, adv_pred=pred[j], adv_correct=bool(adv_correct[j]), success=bool(success[j]),
                    adv_scores=scores[j], linf=linf[j], l2=l2[j], l0=l0[j],
                    queries=None if queries is None else queries[j],
                    forwards=out.forwards, backwards=out.backwards, seconds=share,
                )
            smaller.add(idx, out.x_adv, out.queries, success)
            if mode == "sequential":
                key = (p.attack.norm, eps)
                broken = torch.zeros_like(cc)
                broken[idx] = ~adv_correct
                still_robust[key] = still_robust[key] & ~broken
            if examples is not None and p.attack.norm == examples.norm:
                examples.offer(eps, idx.cpu().numpy(), out.x_adv.float().cpu().numpy(),
                               np.asarray(pred, dtype=object), success.cpu().numpy(), np.asarray(l2))
        model_form = form_of() if form_of is not None else ""
        for eps in p.epsilons:
            for record in per_eps[eps]:
                record["model_form"] = model_form
            records.extend(per_eps[eps])
    return records


def evaluate(
    model: nn.Module, split: Split, plan: Sequence[PlannedAttack], batches: Sequence[tuple[int, int]],
    records: RecordSet, device: str, mode: str = "independent", seed: int = 0,
    on_examples: Callable[[Examples], None] | None = None, n_examples: int = 8, model_form: str = AUTO,
) -> int:
    """Attack every batch of ``batches`` that ``records`` does not hold yet; returns how many were run.

    ``on_examples`` receives the example images of the split's first batch when that batch is run.
    ``model_form`` is how attacks run the model (``bench.model_forms``: auto = the fastest checked form).
    """
    if mode not in BATTERY_MODES:
        raise ValueError(f"unknown battery mode {mode!r}; choices: {', '.join(BATTERY_MODES)}")
    task = split.info.task
    todo = [b for b in batches if not records.has_batch(*b)]
    skipped = len(batches) - len(todo)
    if skipped:
        print(f"  resuming: {skipped} of {len(batches)} batches already in {records.root}", flush=True)
    model.eval()
    form_of = None
    if todo:
        planned = PlannedPasses.of(plan, sum(b - a for a, b in todo))
        form = attack_model(model, model_form, device, split.images[todo[0][0] : todo[0][1]][:64], planned.total,
                            planned.grad_share)
        print(f"  model form: {form.form} (prepared and checked in {form.prepare_s:.1f}s, logit gap "
              f"{form.gap:.2g} of the tolerance)" + (f"; {form.note}" if form.note else ""), flush=True)
        model = form.module
        form_of = partial(running_form, form.module, form.form)
    bar = progress(None, desc=f"attacks on {split.info.track}", unit="img", total=sum(b - a for a, b in todo),
                   leave=True)  # the finished bar stays, with the run's rate
    for start, stop in todo:
        rows = torch.arange(start, stop)
        x, y = split.images[rows].to(device), split.labels[rows].to(device)
        examples = None
        if start == 0 and on_examples is not None and plan:
            k = min(n_examples, stop)
            with torch.no_grad():
                pred = _as_list(task.predict(model(x[:k])))
            norm = plan[0].attack.norm
            epsilons = sorted({e for p in plan if p.attack.norm == norm for e in p.epsilons})
            eps_labels = [next(p.label(e) for p in plan if e in p.epsilons) for e in epsilons]
            examples = Examples(x[:k].float().cpu().numpy(), np.asarray(_as_list(y[:k])), np.asarray(pred), norm, epsilons, eps_labels)
        batch_records = attack_batch(model, plan, x, y, rows, split.indices[rows], task, mode, seed, examples,
                                     on_stage=lambda name: bar.set_postfix_str(name), form_of=form_of)
        if examples is not None:
            on_examples(examples)
        records.write_batch(start, stop, batch_records)
        bar.update(stop - start)
    bar.close()
    return len(todo)


def forms_used(frame: pd.DataFrame, attacks: Sequence[str], eps: float) -> str:
    """The model forms the attacked samples of ``attacks`` at ``eps`` ran in, ';'-joined ('' for old records)."""
    if "model_form" not in frame:
        return ""
    rows = frame[frame["attack"].isin(list(attacks)) & np.isclose(frame["eps"].astype(float), eps)
                 & frame["attacked"].astype(bool)]
    return ";".join(sorted({str(f) for f in rows["model_form"].dropna() if f}))


def summary_rows(frame: pd.DataFrame, plan: Sequence[PlannedAttack], mode: str, battery_name: str | None,
                 task_type: str, flag: str, seed: int) -> list[dict]:
    """One row per attack and epsilon (cumulative in sequential mode), plus battery worst-case rows."""
    out = []
    ids = [p.attack_id for p in plan]
    for k, p in enumerate(plan):
        for eps in p.epsilons:
            attacks = [q.attack_id for q in plan[:k + 1] if q.attack.norm == p.attack.norm and eps in q.epsilons] \
                if mode == "sequential" else [p.attack_id]
            view = metrics.sample_view(frame, attacks, eps)
            out.append({"attack": p.attack_id, "kind": p.attack.kind, "norm": p.attack.norm, "eps": eps,
                        "eps_label": p.label(eps), **metrics.summarise(view, task_type, flag, seed),
                        "model_form": forms_used(frame, attacks, eps)})
    if battery_name and len(plan) > 1:
        for norm in sorted({p.attack.norm for p in plan}):
            group = [p for p in plan if p.attack.norm == norm]
            for eps in sorted({e for p in group for e in p.epsilons}):
                attacks = [p.attack_id for p in group if eps in p.epsilons]
                view = metrics.sample_view(frame, attacks, eps)
                label = next(p.label(eps) for p in group if eps in p.epsilons)
                out.append({"attack": f"battery:{battery_name}", "kind": "battery", "norm": norm, "eps": eps,
                            "eps_label": label, **metrics.summarise(view, task_type, flag, seed),
                            "model_form": forms_used(frame, attacks, eps)})
    assert len(set(ids)) == len(ids), f"attack ids must be unique, got {ids}"
    return out
