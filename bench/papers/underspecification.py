"""D'Amour et al., "Underspecification presents challenges for credibility in modern machine learning" (2020).

Models from one pipeline that differ only in seed (initial weights and data order), or only in data order,
are equally good on the i.i.d. test set; the question is whether they spread more under stress (here: PGD at
two epsilons) than on clean data, beyond what sampling the test set explains. ``spread_summary`` answers it
with a paired bootstrap over test images: every resample scores all models on the same images, so the
across-model spread of each metric and their ratio to the clean spread get intervals.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.metrics import BOOTSTRAP_RESAMPLES, CONFIDENCE
from bench.papers.base import PAPERS, Paper, save_figure

TAG = "underspecification"
DATA_ORDER_TRAIN_SEED = 0  # the data-order run fixes train.seed to this and varies train.data_order_seed
DATASETS = ("breastmnist", "pneumoniamnist")
COLUMNS = ("dataset", "variant", "model", "train_seed", "data_order_seed", "eps_label", "clean_acc", "clean_auc",
           "robust_acc", "robust_acc_lo", "robust_acc_hi", "adv_auc")
SUMMARY_COLUMNS = ("dataset", "variant", "n_models", "metric", "mean", "min", "max", "spread_sd", "spread_sd_lo",
                   "spread_sd_hi", "sampling_sd", "reference", "ratio_to_clean", "ratio_lo", "ratio_hi")


def train_seed(row: Mapping[str, str]) -> str:
    found = re.search(r"_seed(\d+)$", str(row.get("model", "")))
    return found.group(1) if found else ""


def data_order_seed(row: Mapping[str, str]) -> str:
    """The data-order seed a model was trained with (its own seed unless the train column names another)."""
    found = re.search(r"data_order_seed=(\d+)", str(row.get("train", "")))
    return found.group(1) if found else train_seed(row)


def variants(row: Mapping[str, str]) -> list[str]:
    """The comparisons a model belongs to: ``seed`` (trained in its seed's own order) and/or ``data_order``
    (train seed fixed): the model of seed 0 in its own order is in both."""
    if row.get("tag") != TAG or row.get("kind") == "battery":
        return []
    own_order = data_order_seed(row) == train_seed(row)
    return [v for v, member in (("seed", own_order), ("data_order", train_seed(row) == str(DATA_ORDER_TRAIN_SEED)))
            if member]


def table_rows(row: Mapping[str, str]) -> list[dict[str, object]]:
    return [{
        "dataset": row["dataset"], "variant": variant, "model": row["model"], "train_seed": train_seed(row),
        "data_order_seed": data_order_seed(row), "eps_label": row["eps_label"], "clean_acc": row["clean_acc"],
        "clean_auc": row["clean_auc"], "robust_acc": row["robust_acc"], "robust_acc_lo": row["robust_acc_lo"],
        "robust_acc_hi": row["robust_acc_hi"], "adv_auc": row["adv_auc"],
    } for variant in variants(row)]


def records_folder(records_root: Path, row: Mapping[str, str]) -> Path:
    """Where the run that wrote ``row`` keeps its per-sample records (bench/experiment.py open_records)."""
    return (Path(records_root) / f"{row['dataset']}_{row['size']}" / str(row["model"])
            / f"{row['config_hash']}-{str(row['weights_sha256'])[:8]}")


@dataclass(frozen=True)
class SpreadMetric:
    """One metric of every model: its values (models,), the same on bootstrap resamples of the test images
    (``resampled(idx)`` -> (models, resamples), one ``idx`` shared by all metrics: a paired bootstrap), and the
    clean metric its spread is compared with (``clean_acc`` for accuracies, ``clean_balanced_error`` for
    balanced errors)."""

    values: np.ndarray
    resampled: Callable[[np.ndarray], np.ndarray]
    reference: str
    n: int


def from_correct(matrix: np.ndarray) -> SpreadMetric:
    """An accuracy from a (models, samples) 0/1 matrix."""
    return SpreadMetric(matrix.mean(1), lambda idx: matrix[:, idx].mean(2), "clean_acc", matrix.shape[1])


def from_predictions(labels: np.ndarray, predictions: np.ndarray) -> SpreadMetric:
    """A balanced error averaged over severities, from predictions (models, severities, samples)."""
    from bench.corruptions.metrics import balanced_error

    def resampled(idx: np.ndarray) -> np.ndarray:
        return np.stack([np.mean([balanced_error(labels, p, idx) for p in model], axis=0) for model in predictions])

    values = np.array([np.mean([balanced_error(labels, p) for p in model]) for model in predictions])
    return SpreadMetric(values, resampled, "clean_balanced_error", predictions.shape[-1])


def corruption_records(corruption_rows: Sequence[Mapping[str, str]], records_root: Path, n: int) -> dict[str, Path]:
    """weights_sha256 -> the records folder of that model's undefended corruption evaluation of ``n`` samples:
    a complete one (every corruption, the whole test split) before any other, then the newest."""
    from bench.leaderboard.corruption import admission, evaluations

    found: dict[str, tuple[tuple[bool, str], Path]] = {}
    for ev in evaluations(corruption_rows):
        first = ev[0]
        if first["defense"] != "none" or str(first["n"]) != str(n):
            continue
        folder = (Path(records_root) / f"{first['dataset']}_{first['size']}" / first["model"]
                  / f"corruptions-{first['config_hash']}-{first['weights_sha256'][:8]}")
        preference = (admission(ev) is None, first["date"])
        if folder.is_dir() and (first["weights_sha256"] not in found or preference > found[first["weights_sha256"]][0]):
            found[first["weights_sha256"]] = (preference, folder)
    return {sha: folder for sha, (_, folder) in found.items()}


def per_sample(rows: Sequence[Mapping[str, str]], records_root: Path,
               corruption_rows: Sequence[Mapping[str, str]] = ()) -> dict[str, SpreadMetric]:
    """metric -> SpreadMetric over the models of ``rows``: clean accuracy and robustness at each epsilon (attack
    records); with every model's corruption records, clean balanced error and balanced error per corruption."""
    import json

    from bench.metrics import sample_view
    from bench.records import RecordSet

    by_model: dict[str, dict[str, np.ndarray]] = {}
    labels: np.ndarray | None = None
    for row in rows:
        frame = RecordSet.load(records_folder(records_root, row)).read()
        view = sample_view(frame, [str(row["attack"])], float(row["eps"]))
        metrics = by_model.setdefault(str(row["weights_sha256"]), {})  # one model = one set of weights
        metrics["clean_acc"] = view.clean_correct.astype(float)
        metrics["clean_pred"] = np.asarray(view.clean_scores).argmax(1)
        metrics[f"robust_acc@{row['eps_label']}"] = view.robust.astype(float)
        labels = np.asarray(view.labels).reshape(-1)
    out: dict[str, SpreadMetric] = {}
    names = sorted({m for metrics in by_model.values() for m in metrics if m != "clean_pred"},
                   key=lambda m: (m != "clean_acc", m))
    for m in names:
        out[m] = from_correct(np.stack([metrics[m] for metrics in by_model.values()]))
    folders = corruption_records(corruption_rows, records_root, 0 if labels is None else len(labels))
    if labels is None or not by_model or not all(sha in folders for sha in by_model):
        return out  # the corruption columns need every model's corruption records
    corrupted: dict[str, list[np.ndarray]] = {}
    for sha in by_model:
        for path in sorted(folders[sha].glob("*.json")):
            saved = json.loads(path.read_text())
            corrupted.setdefault(path.stem, []).append(
                np.stack([np.asarray(saved["severities"][s]["pred"]) for s in sorted(saved["severities"])]))
    out["clean_balanced_error"] = from_predictions(labels, np.stack([m["clean_pred"] for m in by_model.values()])[:, None])
    complete = {name: np.stack(p) for name, p in corrupted.items() if len(p) == len(by_model)}
    for name, predictions in complete.items():
        out[f"balanced_error@{name}"] = from_predictions(labels, predictions)
    if complete:
        out["balanced_error@mean"] = from_predictions(labels, np.concatenate(list(complete.values()), axis=1))
    return out


def spread_summary(metrics: Mapping[str, SpreadMetric | np.ndarray], seed: int = 0,
                   resamples: int = BOOTSTRAP_RESAMPLES) -> list[dict[str, float | str | int]]:
    """Per metric: the across-model spread (sd) with a paired-bootstrap interval, the sd a single model's
    metric has from test-set sampling alone (the bootstrap sd, averaged over models), and the ratio of the
    spread to its clean reference's spread (clean accuracy, or clean balanced error), with its interval.

    A (models, samples) 0/1 matrix is read as an accuracy."""
    metrics = {k: v if isinstance(v, SpreadMetric) else from_correct(v) for k, v in metrics.items()}
    n = next(iter(metrics.values())).n
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    alpha = (1 - CONFIDENCE) / 2
    boot = {k: m.resampled(idx) for k, m in metrics.items()}  # (models, resamples)
    out = []
    for name, metric in metrics.items():
        values, spreads = metric.values, boot[name].std(0, ddof=1)
        reference = metrics.get(metric.reference)
        ref_sd = reference.values.std(ddof=1) if reference is not None else float("nan")
        ref_spreads = boot[metric.reference].std(0, ddof=1) if reference is not None else np.full(resamples, np.nan)
        ratio = spreads / np.where(ref_spreads > 0, ref_spreads, np.nan)
        out.append({
            "metric": name, "n_models": len(values), "mean": float(values.mean()), "min": float(values.min()),
            "max": float(values.max()), "spread_sd": float(values.std(ddof=1)),
            "spread_sd_lo": float(np.quantile(spreads, alpha)), "spread_sd_hi": float(np.quantile(spreads, 1 - alpha)),
            "sampling_sd": float(np.nanmean(boot[name].std(1, ddof=1))), "reference": metric.reference,
            "ratio_to_clean": float(values.std(ddof=1) / ref_sd) if ref_sd > 0 else float("nan"),
            "ratio_lo": float(np.nanquantile(ratio, alpha)) if np.isfinite(ratio).any() else float("nan"),
            "ratio_hi": float(np.nanquantile(ratio, 1 - alpha)) if np.isfinite(ratio).any() else float("nan"),
        })
    return out


def figure(metrics_by_group: Mapping[tuple[str, str], Mapping[str, SpreadMetric]], out: Path) -> Path:
    """One column per dataset; top: accuracies (clean, robust at each epsilon), bottom: balanced errors (clean,
    under each corruption). Each model's value as a dot, variants side by side, and one model's 95%
    test-sampling interval (bootstrap) as a grey bar for scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({d for d, _ in metrics_by_group})
    kinds = (("accuracy", "clean_acc"), ("balanced error", "clean_balanced_error"))
    has_errors = any(m.reference == "clean_balanced_error" for group in metrics_by_group.values() for m in group.values())
    shown = kinds if has_errors else kinds[:1]
    fig, axes = plt.subplots(len(shown), len(datasets), figsize=(6 * len(datasets), 3.8 * len(shown)), squeeze=False)
    rng_idx = {}
    for col, dataset in enumerate(datasets):
        groups = [(v, m) for (d, v), m in sorted(metrics_by_group.items()) if d == dataset]
        for row, (label, reference) in enumerate(shown):
            ax = axes[row][col]
            names = [k for k, m in groups[0][1].items() if m.reference == reference] if groups else []
            for g, (variant, metrics) in enumerate(groups):
                for i, name in enumerate(names):
                    metric = metrics[name]
                    x = i + (g - (len(groups) - 1) / 2) * 0.3
                    ax.scatter(np.full(len(metric.values), x), metric.values, s=12, alpha=0.7, color=f"C{g}",
                               label=f"{variant} ({len(metric.values)} models)" if i == 0 else None)
                    idx = rng_idx.setdefault(metric.n, np.random.default_rng(0).integers(0, metric.n, (200, metric.n)))
                    half = 1.96 * float(np.mean(metric.resampled(idx).std(1, ddof=1)))
                    ax.errorbar(x + 0.1, metric.values.mean(), yerr=half, color="grey", capsize=3, lw=1)
            ticks = [n.replace("robust_acc@", "robust\n").replace("balanced_error@", "").replace("_", "\n", 1)
                     .replace("clean\nacc", "clean").replace("clean\nbalanced_error", "clean") for n in names]
            ax.set_xticks(range(len(names)), ticks, fontsize=7 if len(names) > 6 else 9)
            ax.set_title(f"{dataset}: {label}", fontsize=10)
            ax.set_ylabel(label)
            if groups:
                ax.legend(fontsize=7)
    fig.suptitle("Models differing only in seed / data order: clean vs stress-test spread "
                 "(grey bar: one model's 95% test-sampling interval)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out)


def extra_outputs(rows: Sequence[Mapping[str, str]], records_root: Path, out: Path,
                  corruption_rows: Sequence[Mapping[str, str]] = ()) -> list[tuple[Path, str | None]]:
    """The spread summary CSV and the figure beside the per-model table ``out``."""
    import csv
    import io

    groups: dict[tuple[str, str], list[Mapping[str, str]]] = {}
    for row in rows:
        for variant in variants(row):
            groups.setdefault((str(row["dataset"]), variant), []).append(row)
    metrics = {key: per_sample(group, records_root, corruption_rows) for key, group in groups.items()}
    summary = [{"dataset": d, "variant": v, **s} for (d, v), m in sorted(metrics.items())
               if len(m["clean_acc"].values) >= 2 for s in spread_summary(m)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(SUMMARY_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in summary)
    summary_path = out.with_name(f"{out.stem}_spread.csv")
    figure_path = figure(metrics, out.with_suffix(".png"))
    return [(summary_path, buffer.getvalue()), (figure_path, None)]


PAPERS.add("underspecification", Paper(
    name="underspecification", experiment="underspecification", datasets=DATASETS, columns=COLUMNS, rows=table_rows,
    sort_by=("dataset", "variant", "eps_label", "train_seed", "data_order_seed"),
    runs=((), (f"train.seed={DATA_ORDER_TRAIN_SEED}", "train.data_order_seed=range(0,10)")),
    per_dataset={"pneumoniamnist": ("train.epochs=10",)},
    commands=("attack", "corrupt"),
    extra=extra_outputs,
))
