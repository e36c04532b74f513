"""The model zoo study: every timm family of ``conf/model/`` trained on BreastMNIST and PneumoniaMNIST (two seeds)
and attacked with the standard battery; which families are more robust at equal clean accuracy.

Robust accuracy alone favours the families that classify more images correctly to begin with, so families are
compared by their **robust rate**: the share of the images a model classifies correctly that it still classifies
correctly under attack (robust accuracy / clean accuracy, pooled over seeds). Each family is compared with the
reference family (the ResNet-18 every defense on the leaderboard wraps) by a paired bootstrap over test images
(every resample scores every model on the same images), and across seeds: a difference is called only when its
95% interval excludes zero *and* both families have at least two seeds *and* every seed of one family lies beyond
every seed of the other; otherwise it is within noise, and ``reason`` says which noise (test-set sampling or seeds).

    python scripts/paper.py zoo                          # train every family, run the battery, write the tables
    python scripts/paper.py zoo --datasets breastmnist   # one dataset
    python scripts/paper.py zoo --table-only             # rebuild results/zoo/ from the rows and records on disk
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.config import parse_eps
from bench.metrics import BOOTSTRAP_RESAMPLES, CONFIDENCE
from bench.papers.base import PAPERS, Paper, save_figure

TAG = "zoo"
DATASETS = ("breastmnist", "pneumoniamnist")
REFERENCE = "resnet18_native"
MIN_SEEDS_FOR_VERDICT = 2  # a difference is called only when both families' seed spreads are measured


@dataclass(frozen=True)
class Budget:
    """How one family is trained: epochs per dataset, and the settings where it departs from the default recipe
    (Adam at lr 0.001, batch 128, lr x0.1 at 50% and 75% of the epochs; ``settings`` are ``train.*`` keys)."""

    epochs: Mapping[str, int]
    settings: Mapping[str, object] = field(default_factory=dict)

    def overrides(self, flag: str) -> tuple[str, ...]:
        return (f"train.epochs={self.epochs[flag]}", *(f"train.{k}={v}" for k, v in self.settings.items()))

    def describe(self, flag: str) -> str:
        """The ``train`` column of a leaderboard row whose model was trained with this budget on ``flag``."""
        from bench.train import TrainConfig
        from bench.zoo import describe_training

        return describe_training(TrainConfig(epochs=self.epochs[flag], augment="none", **self.settings))


# The convolutional families get the budget the undefended ResNet-18 reaches its published accuracy with (30 epochs
# on BreastMNIST's 546 training images, 10 on PneumoniaMNIST's 4,708). The attention models are provisional: trained
# from scratch without warm-up (the trainer has none yet), ViT-Tiny collapses to the class prior at lr 0.001 (its
# BreastMNIST training loss stays at the prior's entropy, 0.58, for 20 epochs, measured here); at lr 0.0003 it
# learns, slowly (on a 128-image batch its loss falls from 0.95 to 0.46 in 60 steps; on the whole BreastMNIST split
# from 0.584 to 0.566 in 16 epochs), so it gets more epochs. Each card records the epoch its validation AUC peaked
# at and the whole validation curve: the first full trainings confirm or change these budgets.
CNN = Budget({"breastmnist": 30, "pneumoniamnist": 10})
ATTENTION = Budget({"breastmnist": 100, "pneumoniamnist": 20}, {"lr": 0.0003})
# Families the first 30-epoch trainings showed still improving (validation AUC best at the last epoch or the one
# before) get twice the steps; at 60 each peaks well inside the budget (BreastMNIST, measured here 2026-12-05):
# ConvNeXt-Atto peaked at epoch 30 of 30 (seed 1), test ACC 0.750 / 0.763, near the majority class; at 60, seed 0
# peaks at epoch 32, test ACC 0.795. MobileNetV3-Small peaked at 30 of 30 on both seeds (0.782 / 0.763); at 60,
# seed 0 peaks at 20 (0.788). MobileNetV3-Large seed 1 peaked at 29 of 30 (0.667); at 60, at 29 (0.788).
LONGER = Budget({"breastmnist": 60, "pneumoniamnist": 20})
FAMILIES: dict[str, Budget] = {
    "resnet18_native": CNN,
    "resnet50_native": CNN,
    "densenet121": CNN,
    "efficientnet_b0": CNN,
    "mobilenetv3_small": LONGER,
    "mobilenetv3_large": LONGER,
    "convnext_atto": LONGER,
    "regnetx_002": CNN,
    "vit_tiny": ATTENTION,
    "deit_tiny": ATTENTION,
}

COLUMNS = ("dataset", "family", "model", "seed", "n", "eps_label", "clean_acc", "robust_acc", "robust_acc_lo",
           "robust_acc_hi", "flags", "config_hash", "weights_sha256")
FAMILY_COLUMNS = ("dataset", "family", "n_seeds", "eps_label", "clean_acc", "clean_acc_lo", "clean_acc_hi",
                  "robust_acc", "robust_acc_lo", "robust_acc_hi", "robust_rate", "robust_rate_lo", "robust_rate_hi",
                  "robust_rate_seed_min", "robust_rate_seed_max", "flags", "reference", "delta", "delta_lo", "delta_hi",
                  "verdict", "reason")


def family_of(row: Mapping[str, str]) -> str:
    """The model config a zoo row was trained from: its model name without the ``_seed<k>`` suffix."""
    return re.sub(r"_seed\d+$", "", str(row.get("model", "")))


def seed_of(row: Mapping[str, str]) -> str:
    found = re.search(r"_seed(\d+)$", str(row.get("model", "")))
    return found.group(1) if found else ""


def is_battery_row(row: Mapping[str, str]) -> bool:
    """A worst-case row of the zoo's standard battery on an undefended model."""
    return row.get("tag") == TAG and row.get("kind") == "battery" and row.get("defense", "none") == "none"


def one_training_per_model(rows: Sequence[Mapping[str, str]]) -> list[Mapping[str, str]]:
    """Each (dataset, model)'s rows from one training: the family's declared budget (``FAMILIES``) where it was run,
    else the newest. A family whose budget changed keeps its old rows on disk, but a model is never counted twice
    or compared at two budgets."""
    trainings: dict[tuple[str, str], dict[str, str]] = {}  # (dataset, model) -> train -> newest date
    for row in rows:
        dates = trainings.setdefault((row["dataset"], row["model"]), {})
        dates[row["train"]] = max(dates.get(row["train"], ""), str(row.get("date", "")))
    chosen: dict[tuple[str, str], str] = {}
    for (dataset, model), dates in trainings.items():
        budget = FAMILIES.get(family_of({"model": model}))
        declared = budget.describe(dataset) if budget is not None and dataset in budget.epochs else None
        chosen[(dataset, model)] = declared if declared in dates else max(dates, key=lambda t: dates[t])
    return [r for r in rows if r["train"] == chosen[(r["dataset"], r["model"])]]


def table_rows(row: Mapping[str, str]) -> list[dict[str, object]]:
    if not is_battery_row(row):
        return []
    return [{"dataset": row["dataset"], "family": family_of(row), "model": row["model"], "seed": seed_of(row),
             "n": row["n"], "eps_label": row["eps_label"], "clean_acc": row["clean_acc"], "robust_acc": row["robust_acc"],
             "robust_acc_lo": row["robust_acc_lo"], "robust_acc_hi": row["robust_acc_hi"],
             "flags": row.get("flags", ""), "config_hash": row["config_hash"], "weights_sha256": str(row["weights_sha256"])[:8]}]


@dataclass(frozen=True)
class FamilySamples:
    """One family's per-sample outcomes on one dataset: (seeds, samples) 0/1 matrices, clean and per epsilon;
    and the ranking-blocking flags any of its evaluations raised (bench/checks.py)."""

    clean: np.ndarray
    robust: dict[str, np.ndarray]
    flags: tuple[str, ...] = ()


def _rate(robust: np.ndarray, clean: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    correct = clean.sum(axis)
    return np.where(correct > 0, robust.sum(axis) / np.maximum(correct, 1), np.nan)


def compare_families(families: Mapping[str, FamilySamples], reference: str = REFERENCE,
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> list[dict[str, object]]:
    """One row per (family, epsilon): clean and robust accuracy and the robust rate (pooled over seeds) with 95%
    paired-bootstrap intervals over test images, the rate's range over seeds, and its difference from
    ``reference``'s rate with the verdict (module docstring)."""
    names = sorted(families, key=lambda f: (f != reference, f))
    n = next(iter(families.values())).clean.shape[1]
    if any(f.clean.shape[1] != n for f in families.values()):
        raise ValueError("every family must be scored on the same test images")
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    alpha = (1 - CONFIDENCE) / 2

    def interval(values: np.ndarray) -> tuple[float, float]:
        lo, hi = np.nanquantile(values, [alpha, 1 - alpha])
        return float(lo), float(hi)

    out: list[dict[str, object]] = []
    epsilons = sorted({e for f in families.values() for e in f.robust}, key=parse_eps)
    for eps in epsilons:
        rows: dict[str, dict[str, object]] = {}
        boot_rates: dict[str, np.ndarray] = {}
        for name in (f for f in names if eps in families[f].robust):
            fam = families[name]
            clean, robust = fam.clean[:, idx], fam.robust[eps][:, idx]  # (seeds, resamples, n)
            boot_rates[name] = _rate(robust, clean, (0, 2))
            seed_rates = _rate(fam.robust[eps], fam.clean, 1)
            rows[name] = {
                "family": name, "n_seeds": fam.clean.shape[0], "eps_label": eps,
                "clean_acc": float(fam.clean.mean()), **_named("clean_acc", interval(clean.mean((0, 2)))),
                "robust_acc": float(fam.robust[eps].mean()), **_named("robust_acc", interval(robust.mean((0, 2)))),
                "robust_rate": float(_rate(fam.robust[eps], fam.clean, (0, 1))),
                **_named("robust_rate", interval(boot_rates[name])),
                "robust_rate_seed_min": float(np.nanmin(seed_rates)),
                "robust_rate_seed_max": float(np.nanmax(seed_rates)),
                "flags": ";".join(fam.flags), "reference": "", "delta": "", "delta_lo": "", "delta_hi": "",
                "verdict": "", "reason": "",
            }
        for name, row in rows.items():
            if name == reference or reference not in rows:
                continue
            ref = rows[reference]
            lo, hi = interval(boot_rates[name] - boot_rates[reference])
            row.update(reference=reference, delta=float(row["robust_rate"]) - float(ref["robust_rate"]),
                       delta_lo=lo, delta_hi=hi, **_verdict(lo, hi, row, ref))
        out.extend(rows.values())
    return out


def _named(prefix: str, bounds: tuple[float, float]) -> dict[str, float]:
    return {f"{prefix}_lo": bounds[0], f"{prefix}_hi": bounds[1]}


def _verdict(lo: float, hi: float, row: Mapping[str, object], ref: Mapping[str, object]) -> dict[str, str]:
    flagged = [f"{r['family']}: {str(r['flags']).replace(';', ', ')}" for r in (row, ref) if r["flags"]]
    if flagged:
        return {"verdict": "not comparable", "reason": "flagged by the checks (" + "; ".join(flagged) + ")"}
    if lo <= 0 <= hi:
        return {"verdict": "within noise", "reason": "the 95% interval of the difference contains 0"}
    if min(int(row["n_seeds"]), int(ref["n_seeds"])) < MIN_SEEDS_FOR_VERDICT:
        return {"verdict": "within noise", "reason": f"fewer than {MIN_SEEDS_FOR_VERDICT} seeds: seed noise is unmeasured"}
    above = lo > 0
    seeds_apart = (row["robust_rate_seed_min"] > ref["robust_rate_seed_max"] if above
                   else row["robust_rate_seed_max"] < ref["robust_rate_seed_min"])
    if not seeds_apart:
        return {"verdict": "within noise", "reason": "the seeds of the two families overlap"}
    return {"verdict": "more robust" if above else "less robust", "reason": ""}


def family_samples(rows: Sequence[Mapping[str, str]], records_root: Path) -> dict[str, dict[str, FamilySamples]]:
    """dataset -> family -> per-sample outcomes, read from each battery evaluation's records (worst case over the
    battery's attacks, per epsilon). Only evaluations of a dataset's largest test set are compared (a smoke run on
    a subset is left out), so every model is scored on the same images."""
    from bench.checks import blocking_flags
    from bench.metrics import sample_view
    from bench.papers.underspecification import records_folder
    from bench.records import RecordSet

    blocking = blocking_flags()
    rows = [r for r in rows if is_battery_row(r)]
    largest = {r["dataset"]: max(int(q["n"]) for q in rows if q["dataset"] == r["dataset"]) for r in rows}
    per_model: dict[tuple[str, str], dict[str, dict[str, np.ndarray]]] = {}
    flags: dict[tuple[str, str], set[str]] = {}
    frames: dict[Path, object] = {}
    for row in (r for r in rows if int(r["n"]) == largest[r["dataset"]]):
        folder = records_folder(records_root, row)
        if folder not in frames:
            frames[folder] = RecordSet.load(folder).read()
        frame = frames[folder]
        eps = float(row["eps"])
        attacks = sorted(frame.loc[np.isclose(frame["eps"].astype(float), eps), "attack"].unique())
        view = sample_view(frame, attacks, eps)
        key = (row["dataset"], family_of(row))
        flags.setdefault(key, set()).update(f for f in str(row.get("flags", "")).split(";") if f in blocking)
        outcome = per_model.setdefault(key, {}).setdefault(seed_of(row), {})
        outcome["clean"] = view.clean_correct.astype(float)
        outcome[str(row["eps_label"])] = view.robust.astype(float)
    out: dict[str, dict[str, FamilySamples]] = {}
    for (dataset, family), seeds in per_model.items():
        ordered = [seeds[s] for s in sorted(seeds, key=int)]
        labels = set.intersection(*(set(o) - {"clean"} for o in ordered))
        out.setdefault(dataset, {})[family] = FamilySamples(
            np.stack([o["clean"] for o in ordered]), {e: np.stack([o[e] for o in ordered]) for e in labels},
            tuple(sorted(flags[(dataset, family)])))
    return out


def figure(comparisons: Mapping[str, list[dict[str, object]]], eps_label: str, path: Path) -> Path:
    """Robust accuracy at ``eps_label`` against clean accuracy, one point per family (with both intervals) and
    one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in comparisons if any(r["eps_label"] == eps_label for r in comparisons[d])]
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(6 * max(1, len(datasets)), 4.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        any_flagged = False
        for r in (r for r in comparisons[dataset] if r["eps_label"] == eps_label):
            x, y = float(r["clean_acc"]), float(r["robust_acc"])
            flags = [f for f in str(r.get("flags") or "").split(";") if f]
            any_flagged = any_flagged or bool(flags)
            # a flagged family (below the published baseline, or an evaluation the checks call unreliable) is
            # drawn hollow with a star: its point must not read as a robust family
            bar = ax.errorbar(x, y, xerr=[[x - float(r["clean_acc_lo"])], [float(r["clean_acc_hi"]) - x]],
                              yerr=[[y - float(r["robust_acc_lo"])], [float(r["robust_acc_hi"]) - y]], fmt="o",
                              capsize=2, mfc="none" if flags else None)
            label = f"{r['family']}*" if flags else str(r["family"])
            ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points",
                        color=bar[0].get_color())
        if any_flagged:  # the legend explains the hollow marker only where one is drawn
            ax.plot([], [], "o", mfc="none", color="grey",
                    label="hollow, *: flagged by the checks (families.csv: flags), not comparable")
        low, high = ax.get_xlim()
        ax.plot([low, high], [low, high], ls="--", lw=0.8, color="grey", label="robust = clean (nothing lost)")
        ax.legend(fontsize=7, loc="upper left")
        ax.set_xlabel("clean accuracy (mean over seeds, 95% CI)")
        ax.set_ylabel(f"robust accuracy at {eps_label} (standard battery)")
        ax.set_title(dataset)
        ax.grid(alpha=0.3)
    fig.suptitle("The model zoo: robustness against clean accuracy, per family")
    fig.tight_layout()
    return save_figure(fig, path)


def extra_outputs(rows: Sequence[Mapping[str, str]], records_root: Path, out: Path,
                  corruption_rows: Sequence[Mapping[str, str]] = ()) -> list[tuple[Path, str | None]]:
    """``families.csv`` (the comparison) and ``families.png`` beside the per-model table ``out``."""
    import csv
    import io

    comparisons = {dataset: compare_families(families) for dataset, families in family_samples(rows, records_root).items()}
    order = {flag: i for i, flag in enumerate(DATASETS)}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(FAMILY_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for dataset in sorted(comparisons, key=lambda d: (order.get(d, len(order)), d)):
        for r in comparisons[dataset]:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in {"dataset": dataset, **r}.items()})
    return [(out.with_name("families.csv"), buffer.getvalue()),
            (figure(comparisons, "2/255", out.with_name("families.png")), None)]


PAPERS.add(TAG, Paper(
    name=TAG, experiment=TAG, datasets=DATASETS, columns=COLUMNS, rows=table_rows,
    sort_by=("dataset", "family", "seed", "eps_label"), kept_by=("dataset", "family"), select=one_training_per_model,
    dataset_runs={flag: tuple((f"model={family}", *budget.overrides(flag)) for family, budget in FAMILIES.items())
                  for flag in DATASETS},
    commands=("train", "attack"),
    command_overrides={"train": ("reuse=true",)},  # a model the zoo holds with these settings is kept: resumable
    extra=extra_outputs,
    table_path="results/zoo/zoo.csv",
))
