"""The MedMNIST v2 clean baselines (Yang et al., Scientific Data 2023): ResNet-18 (28) and ResNet-50 (28) over seeds.

The paper's recipe: the CIFAR-style ResNets (3x3 stride-1 stem, no max-pool: our ``resnet18_28`` and
``resnet50_28``), Adam at lr 0.001, batch 128, 100 epochs, lr x 0.1 at epochs 50 and 75, the epoch with the best
validation AUC kept (what ``bench.train`` does), no augmentation. ``conf/experiment/medmnist_baselines.yaml``
trains both models for seeds 0-2 into the zoo (``scripts/train.py -m``); the table reads the zoo's model cards,
one line per (dataset, model, training settings) with the mean and standard deviation over its seeds beside the
published numbers, and says whether the settings are the paper's recipe (``paper_recipe``), so a shorter run is
never mistaken for a reproduction.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from bench.papers.base import PAPERS, Paper
from bench.published import published_resnet

TAG = "medmnist_baselines"
MODELS = {"resnet18_28": 18, "resnet50_28": 50}
DATASETS = ("breastmnist", "pneumoniamnist")
COLUMNS = ("dataset", "model", "train", "paper_recipe", "n_seeds", "seeds", "test_acc_mean", "test_acc_sd",
           "test_auc_mean", "test_auc_sd", "published_acc", "published_auc")
PAPER_RECIPE = {"epochs": 100, "batch_size": 128, "lr": 0.001, "weight_decay": 0.0, "milestones": [0.5, 0.75],
                "gamma": 0.1, "n_train": None, "augment": "none"}


def _describe(settings: dict) -> str:
    from bench.zoo import describe_training

    return describe_training(settings)


def collect(zoo_dir: Path) -> list[dict[str, object]]:
    """One table row per (dataset, model, training settings) among the zoo's ResNet-18/50 (28) cards."""
    from bench.zoo import training_settings

    groups: dict[tuple[str, str, str], list[dict]] = {}
    for card_file in sorted(Path(zoo_dir).glob("*_28/*.json")):
        card = json.loads(card_file.read_text())
        if card.get("name") not in MODELS or card.get("size") != 28 or "metrics" not in card:
            continue
        if (card.get("train") or {}).get("defense", "none") != "none":
            continue
        settings = training_settings(card.get("train") or {})
        groups.setdefault((card["dataset"], card["name"], _describe(settings)), []).append({**card, "settings": settings})
    rows = []
    for (dataset, model, train), cards in groups.items():
        accs = [float(c["metrics"]["test_acc"]) for c in cards]
        aucs = [float(c["metrics"]["test_auc"]) for c in cards]
        settings = cards[0]["settings"]
        published = published_resnet(dataset, MODELS[model])
        sd = lambda xs: f"{statistics.stdev(xs):.4f}" if len(xs) > 1 else ""  # noqa: E731
        rows.append({
            "dataset": dataset, "model": model, "train": train,
            "paper_recipe": str(all(settings.get(k) == v for k, v in PAPER_RECIPE.items())).lower(),
            "n_seeds": len(cards), "seeds": " ".join(str(c["seed"]) for c in sorted(cards, key=lambda c: c["seed"])),
            "test_acc_mean": f"{statistics.fmean(accs):.4f}", "test_acc_sd": sd(accs),
            "test_auc_mean": f"{statistics.fmean(aucs):.4f}", "test_auc_sd": sd(aucs),
            "published_acc": "" if published is None else published.acc,
            "published_auc": "" if published is None else published.auc,
        })
    order = {flag: i for i, flag in enumerate(DATASETS)}
    return sorted(rows, key=lambda r: (order.get(str(r["dataset"]), len(order)), str(r["dataset"]), str(r["model"]),
                                       r["paper_recipe"] != "true", str(r["train"])))


PAPERS.add("medmnist_baselines", Paper(
    name="medmnist_baselines", experiment=TAG, datasets=DATASETS, columns=COLUMNS, rows=lambda row: [],
    sort_by=("dataset", "model", "train"), kept_by=("dataset", "model", "train"), commands=("train",), table=collect,
    runs=(("reuse=true",),),  # a model the zoo already holds with these settings is kept: a rerun resumes
))
