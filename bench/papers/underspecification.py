"""D'Amour et al., "Underspecification presents challenges for credibility in modern machine learning" (2020).

Models from one pipeline that differ only in seed (initial weights and data order), or only in data order,
are equally good on the i.i.d. test set; the question is whether they spread more under stress (here: PGD at
two epsilons) than on clean data, beyond what sampling the test set explains. ``spread_summary`` answers it
with a paired bootstrap over test images: every resample scores all models on the same images, so the
across-model spread of each metric and their ratio to the clean spread get intervals.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bench.metrics import BOOTSTRAP_RESAMPLES, CONFIDENCE
from bench.papers.base import PAPERS, Paper

TAG = "underspecification"
DATA_ORDER_TRAIN_SEED = 0  # the data-order run fixes train.seed to this and varies train.data_order_seed
DATASETS = ("breastmnist", "pneumoniamnist")
COLUMNS = ("dataset", "variant", "model", "train_seed", "data_order_seed", "eps_label", "clean_acc", "clean_auc",
           "robust_acc", "robust_acc_lo", "robust_acc_hi", "adv_auc")
SUMMARY_COLUMNS = ("dataset", "variant", "n_models", "metric", "mean", "min", "max", "spread_sd", "spread_sd_lo",
                   "spread_sd_hi", "sampling_sd", "ratio_to_clean", "ratio_lo", "ratio_hi")


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


def per_sample(rows: Sequence[Mapping[str, str]], records_root: Path) -> dict[str, np.ndarray]:
    """metric -> (models, samples) 0/1 matrix: clean correctness and robustness at each epsilon, from records."""
    from bench.metrics import sample_view
    from bench.records import RecordSet

    by_model: dict[str, dict[str, np.ndarray]] = {}
    for row in rows:
        frame = RecordSet.load(records_folder(records_root, row)).read()
        view = sample_view(frame, [str(row["attack"])], float(row["eps"]))
        metrics = by_model.setdefault(str(row["weights_sha256"]), {})  # one model = one set of weights
        metrics["clean_acc"] = view.clean_correct.astype(float)
        metrics[f"robust_acc@{row['eps_label']}"] = view.robust.astype(float)
    names = sorted({m for metrics in by_model.values() for m in metrics}, key=lambda m: (m != "clean_acc", m))
    return {m: np.stack([metrics[m] for metrics in by_model.values()]) for m in names}


def spread_summary(matrices: Mapping[str, np.ndarray], seed: int = 0,
                   resamples: int = BOOTSTRAP_RESAMPLES) -> list[dict[str, float | str | int]]:
    """Per metric: the across-model spread (sd) with a paired-bootstrap interval, the sd a single model's
    metric has from test-set sampling alone, and the ratio of the spread to the clean-accuracy spread."""
    clean = matrices["clean_acc"]
    n_models, n = clean.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    alpha = (1 - CONFIDENCE) / 2

    def spreads(matrix: np.ndarray) -> np.ndarray:  # (resamples,) across-model sd of the resampled metric
        return matrix[:, idx].mean(2).std(0, ddof=1)

    clean_spreads = spreads(clean)
    out = []
    for metric, matrix in matrices.items():
        values = matrix.mean(1)
        boot = spreads(matrix)
        ratio = boot / np.where(clean_spreads > 0, clean_spreads, np.nan)
        sampling = float(np.mean([np.sqrt(v * (1 - v) / n) for v in values]))
        out.append({
            "metric": metric, "n_models": n_models, "mean": float(values.mean()), "min": float(values.min()),
            "max": float(values.max()), "spread_sd": float(values.std(ddof=1)),
            "spread_sd_lo": float(np.quantile(boot, alpha)), "spread_sd_hi": float(np.quantile(boot, 1 - alpha)),
            "sampling_sd": sampling,
            "ratio_to_clean": float(values.std(ddof=1) / clean.mean(1).std(ddof=1)) if clean.mean(1).std() > 0 else float("nan"),
            "ratio_lo": float(np.nanquantile(ratio, alpha)), "ratio_hi": float(np.nanquantile(ratio, 1 - alpha)),
        })
    return out


def figure(matrices_by_group: Mapping[tuple[str, str], Mapping[str, np.ndarray]], out: Path) -> Path:
    """One panel per dataset: each model's value of every metric (dots), variants side by side, with the
    95% test-sampling interval of one model (bar) for scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({d for d, _ in matrices_by_group})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        groups = [(v, m) for (d, v), m in sorted(matrices_by_group.items()) if d == dataset]
        for g, (variant, matrices) in enumerate(groups):
            for i, (metric, matrix) in enumerate(matrices.items()):
                values = matrix.mean(1)
                x = i + (g - (len(groups) - 1) / 2) * 0.3
                ax.scatter(np.full(len(values), x), values, s=14, alpha=0.7,
                           color=f"C{g}", label=f"{variant} ({len(values)} models)" if i == 0 else None)
                half = 1.96 * np.sqrt(values.mean() * (1 - values.mean()) / matrix.shape[1])
                ax.errorbar(x + 0.1, values.mean(), yerr=half, color="grey", capsize=3, lw=1)
        metrics = list(groups[0][1]) if groups else []
        ax.set_xticks(range(len(metrics)), [m.replace("robust_acc@", "robust\n") for m in metrics])
        ax.set_title(dataset)
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=8)
    fig.suptitle("Models differing only in seed / data order: clean vs stress-test spread\n"
                 "(grey bar: one model's 95% test-sampling interval)", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def extra_outputs(rows: Sequence[Mapping[str, str]], records_root: Path, out: Path) -> list[tuple[Path, str | None]]:
    """The spread summary CSV and the figure beside the per-model table ``out``."""
    import csv
    import io

    groups: dict[tuple[str, str], list[Mapping[str, str]]] = {}
    for row in rows:
        for variant in variants(row):
            groups.setdefault((str(row["dataset"]), variant), []).append(row)
    matrices = {key: per_sample(group, records_root) for key, group in groups.items()}
    summary = [{"dataset": d, "variant": v, **s} for (d, v), m in sorted(matrices.items())
               if m["clean_acc"].shape[0] >= 2 for s in spread_summary(m)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(SUMMARY_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in summary)
    summary_path = out.with_name(f"{out.stem}_spread.csv")
    figure_path = figure(matrices, out.with_suffix(".png"))
    return [(summary_path, buffer.getvalue()), (figure_path, None)]


PAPERS.add("underspecification", Paper(
    name="underspecification", experiment="underspecification", datasets=DATASETS, columns=COLUMNS, rows=table_rows,
    sort_by=("dataset", "variant", "eps_label", "train_seed", "data_order_seed"),
    runs=((), (f"train.seed={DATA_ORDER_TRAIN_SEED}", "train.data_order_seed=range(0,10)")),
    per_dataset={"pneumoniamnist": ("train.epochs=10",)},
    extra=extra_outputs,
))
