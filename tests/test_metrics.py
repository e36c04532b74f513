"""Metrics as ../shared/DESIGN.md defines them, computed from hand-made per-sample records."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from medmnist.evaluator import getAUC

from bench import metrics
from bench.records import RECORD_FIELDS


def records(attack: str, labels, clean_pred, adv_pred, attacked, stage=0, eps=0.1, l2=None, queries=None):
    """Binary-task records of one attack at one epsilon (None in adv_pred = not attacked)."""
    out = []
    for i, (y, c, a, att) in enumerate(zip(labels, clean_pred, adv_pred, attacked)):
        clean_scores = [0.9, 0.1] if c == 0 else [0.2, 0.8]
        adv_scores = None if not att else ([0.7, 0.3] if a == 0 else [0.4, 0.6])
        out.append({
            "index": i, "sample_id": i, "label": y, "clean_pred": c, "clean_correct": c == y,
            "clean_scores": clean_scores, "attack": attack, "kind": "gradient", "stage": stage, "norm": "linf",
            "eps": eps, "eps_label": "x", "attacked": att, "adv_pred": a if att else None,
            "adv_correct": (a == y) if att else None, "success": (a != y) if att else None,
            "adv_scores": adv_scores, "linf": eps if att else None, "l2": (l2[i] if l2 else 1.0) if att else None,
            "l0": 784 if att else None, "queries": (queries[i] if queries else None) if att else None,
            "forwards": 10.0 if att else None, "backwards": 10.0 if att else None, "seconds": 0.01 if att else None,
            "seed": 0,
        })
    return pd.DataFrame(out, columns=RECORD_FIELDS)


LABELS = [0, 0, 1, 1, 1, 0]
CLEAN = [0, 1, 1, 1, 1, 0]  # sample 1 is a clean error


def test_robust_accuracy_counts_clean_errors_as_non_robust_and_asr_only_clean_correct():
    adv = [1, None, 1, 0, 1, 0]  # breaks sample 0 and 3
    frame = records("a", LABELS, CLEAN, adv, [True, False, True, True, True, True])
    view = metrics.sample_view(frame, ["a"], 0.1)
    row = metrics.summarise(view, "binary-class", "pneumoniamnist", seed=0)
    assert row["n"] == 6
    assert row["clean_acc"] == pytest.approx(5 / 6)
    assert row["robust_acc"] == pytest.approx(3 / 6)
    assert row["asr"] == pytest.approx(2 / 5)
    assert row["robust_acc_lo"] <= row["robust_acc"] <= row["robust_acc_hi"]
    assert row["asr_lo"] <= row["asr"] <= row["asr_hi"]


def test_worst_case_is_per_sample_and_picks_the_smallest_successful_example():
    a = records("a", LABELS, CLEAN, [1, None, 1, 0, 1, 0], [True, False, True, True, True, True], l2=[2, 0, 0, 3, 0, 0])
    b = records("b", LABELS, CLEAN, [1, None, 0, 1, 1, 0], [True, False, True, True, True, True], stage=1, l2=[1, 0, 5, 0, 0, 0])
    view = metrics.sample_view(pd.concat([a, b]), ["a", "b"], 0.1)
    assert view.robust.tolist() == [False, False, False, False, True, True]
    assert view.success.tolist() == [True, False, True, True, False, False]
    assert view.l2[0] == 1  # both broke sample 0: b's example is smaller
    assert view.l2[2] == 5 and view.l2[3] == 3
    assert view.forwards.tolist() == [20, 0, 20, 20, 20, 20]


def test_sequential_records_skip_broken_samples_and_stay_worst_case():
    a = records("a", LABELS, CLEAN, [1, None, 1, 0, 1, 0], [True, False, True, True, True, True])
    # the second attack only sees what the first left robust (samples 2, 4, 5)
    b = records("b", LABELS, CLEAN, [None, None, 0, None, 1, 0], [False, False, True, False, True, True], stage=1)
    view = metrics.sample_view(pd.concat([a, b]), ["a", "b"], 0.1)
    assert view.robust.tolist() == [False, False, False, False, True, True]
    assert metrics.robust_acc(view.robust) == pytest.approx(2 / 6)


def test_auc_is_medmnist_evaluators_and_uses_adversarial_scores():
    frame = records("a", LABELS, CLEAN, [1, None, 1, 0, 1, 0], [True, False, True, True, True, True])
    view = metrics.sample_view(frame, ["a"], 0.1)
    row = metrics.summarise(view, "binary-class", "pneumoniamnist", seed=0)
    labels = np.array(LABELS).reshape(-1, 1)
    clean_scores = np.array(frame["clean_scores"].tolist())
    assert row["clean_auc"] == pytest.approx(getAUC(labels, clean_scores, "binary-class"))
    adv_scores = np.array([s if s is not None else c for s, c in zip(frame["adv_scores"], frame["clean_scores"])])
    assert row["adv_auc"] == pytest.approx(getAUC(labels, adv_scores, "binary-class"))
    assert row["adv_auc"] < row["clean_auc"]


@pytest.mark.parametrize("flag,missed,alarm", [("pneumoniamnist", 1 / 3, 1 / 2), ("breastmnist", 1 / 2, 1 / 3)])
def test_flip_directions_follow_which_label_means_disease(flag, missed, alarm):
    # clean-correct: negatives(0) = samples 0, 5; positives(1) = 2, 3, 4. Broken: 0 (0->1) and 3 (1->0).
    frame = records("a", LABELS, CLEAN, [1, None, 1, 0, 1, 0], [True, False, True, True, True, True])
    row = metrics.summarise(metrics.sample_view(frame, ["a"], 0.1), "binary-class", flag, seed=0)
    assert row["missed_disease_rate"] == pytest.approx(missed)
    assert row["false_alarm_rate"] == pytest.approx(alarm)


def test_per_class_robust_accuracy():
    frame = records("a", LABELS, CLEAN, [1, None, 1, 0, 1, 0], [True, False, True, True, True, True])
    row = metrics.summarise(metrics.sample_view(frame, ["a"], 0.1), "binary-class", "pneumoniamnist", seed=0)
    assert row["per_class_robust_acc"] == "0:0.3333;1:0.6667"


def test_norms_and_queries_are_over_successes_only():
    frame = records("a", LABELS, CLEAN, [1, None, 1, 0, 1, 0], [True, False, True, True, True, True],
                    l2=[2, 0, 9, 4, 9, 9], queries=[10, 0, 500, 30, 500, 500])
    row = metrics.summarise(metrics.sample_view(frame, ["a"], 0.1), "binary-class", "pneumoniamnist", seed=0)
    assert row["l2_mean"] == 3 and row["l2_median"] == 3
    assert row["queries_mean"] == 20 and row["queries_median"] == 20
    assert row["l0_median"] == 784


def test_bootstrap_interval_is_seeded_and_narrows_with_more_samples():
    rng = np.random.default_rng(0)
    small = (rng.random(50) < 0.5).astype(float)
    large = (rng.random(2000) < 0.5).astype(float)
    lo1, hi1 = metrics.bootstrap_interval(lambda idx: small[idx].mean(1), len(small), seed=3)
    assert (lo1, hi1) == metrics.bootstrap_interval(lambda idx: small[idx].mean(1), len(small), seed=3)
    lo2, hi2 = metrics.bootstrap_interval(lambda idx: large[idx].mean(1), len(large), seed=3)
    assert hi2 - lo2 < (hi1 - lo1) / 3
    # about the normal-approximation width for a proportion
    assert hi2 - lo2 == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 2000), rel=0.15)


def test_empty_success_gives_nan_not_zero():
    frame = records("a", LABELS, CLEAN, [0, None, 1, 1, 1, 0], [True, False, True, True, True, True])
    row = metrics.summarise(metrics.sample_view(frame, ["a"], 0.1), "binary-class", "pneumoniamnist", seed=0)
    assert row["asr"] == 0 and math.isnan(row["l2_median"]) and math.isnan(row["queries_median"])
