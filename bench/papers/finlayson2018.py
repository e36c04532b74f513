"""Finlayson, Chung, Kohane, Beam: "Adversarial attacks against medical deep learning systems" (arXiv 2018;
Science 2019). conf/experiment/finlayson2018.yaml runs it; results/paper/README.md compares."""

from __future__ import annotations

from collections.abc import Mapping

from bench.papers.base import PAPERS, Paper

# experiment attack id -> (the paper's attack, access)
ATTACKS = {
    "finlayson2018_pgd_white_box": ("pgd", "white-box"),
    "finlayson2018_pgd_black_box": ("pgd", "black-box"),
    "finlayson2018_patch_white_box": ("adversarial_patch", "white-box"),
    "finlayson2018_patch_black_box": ("adversarial_patch", "black-box"),
    "finlayson2018_natural_patch": ("natural_patch", "black-box"),  # uses no model at all
}
# Our MedMNIST analogue of each of the paper's tasks.
DATASETS = ("pneumoniamnist", "dermamnist_melanoma", "retinamnist_referable")
# (dataset, attack, access) -> (attacked AUC, attacked accuracy) as the paper reports them: the black-box patch
# on dermoscopy / chest X-ray / fundus. White-box patch results are reported as about zero, without a number.
PUBLISHED = {
    ("dermamnist_melanoma", "adversarial_patch", "black-box"): (0.0004, 0.014),
    ("pneumoniamnist", "adversarial_patch", "black-box"): (0.0038, 0.097),
    ("retinamnist_referable", "adversarial_patch", "black-box"): (0.0002, 0.040),
}
COLUMNS = ("dataset", "model", "attack", "access", "clean_auc", "attacked_auc", "clean_acc", "attacked_acc",
           "attacked_acc_ci_low", "attacked_acc_ci_high", "published_attacked_auc", "published_attacked_acc")


def table_rows(row: Mapping[str, str]) -> list[dict[str, object]]:
    if row.get("attack") not in ATTACKS:
        return []
    attack, access = ATTACKS[str(row["attack"])]
    published = PUBLISHED.get((str(row["dataset"]), attack, access), ("", ""))
    return [{
        "dataset": row["dataset"], "model": row["model"], "attack": attack, "access": access,
        "clean_auc": row["clean_auc"], "attacked_auc": row["adv_auc"],
        "clean_acc": row["clean_acc"], "attacked_acc": row["robust_acc"],
        "attacked_acc_ci_low": row["robust_acc_lo"], "attacked_acc_ci_high": row["robust_acc_hi"],
        "published_attacked_auc": published[0], "published_attacked_acc": published[1],
    }]


PAPERS.add("finlayson2018", Paper(
    name="finlayson2018", experiment="finlayson2018", datasets=DATASETS, columns=COLUMNS, rows=table_rows,
    sort_by=("dataset", "attack", "access"),
))
