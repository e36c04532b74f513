"""What the leaderboard ranks: the admission rules, the model checks that feed them, and promotion into results/.

These read as the rules themselves: a constant predictor is flagged and never ranked;
a quick-battery or subset evaluation is kept but never ranked; only an explicit
promotion writes the tracked leaderboard, and only admitted evaluations unless told.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.checks import CHECKS, CleanPredictions, run_prediction_checks
from bench.config import compose, to_dict
from bench.leaderboard import read_rows, track_path, upsert_rows
from bench.leaderboard.admission import RULES, admit, battery_hash, group_evaluations, standard_battery
from bench.leaderboard.promote import promote
from tests.conftest import REPO, evaluation_rows

rng = np.random.default_rng(0)


def clean(preds, labels, flag="breastmnist", num_classes=2, scores=None) -> CleanPredictions:
    preds, labels = np.asarray(preds), np.asarray(labels)
    if scores is None:
        scores = np.eye(num_classes)[preds] * 0.8 + 0.1
    return CleanPredictions(flag, 28, "binary-class" if num_classes == 2 else "multi-class", num_classes, labels, preds,
                            np.asarray(scores, dtype=float))


# --------------------------------------------------------------------------------------------------
# the model checks behind the rules
# --------------------------------------------------------------------------------------------------
def test_every_check_documents_its_threshold_and_whether_it_blocks_ranking():
    for check in CHECKS.values():
        assert check.scope in ("model", "predictions", "rows", "evaluation") and check.threshold and check.meaning
    assert {"constant_predictor", "below_published_baseline", "zero_grad", "nondeterministic"} <= {
        c.name for c in CHECKS.values() if c.blocks_ranking}


def test_a_constant_predictor_is_flagged():
    labels = np.array([0] * 42 + [1] * 114)  # BreastMNIST's test split: 42 malignant, 114 benign
    assert "predicts class 1 for 100.0% of 156" in run_prediction_checks(clean(np.ones(156, int), labels))["constant_predictor"]
    nearly = np.ones(156, int)
    nearly[:6] = 0  # 96% one class
    assert "constant_predictor" in run_prediction_checks(clean(nearly, labels))


def test_a_predictor_at_chance_is_flagged_even_when_it_is_not_constant():
    labels = np.array([0, 1] * 78)
    coin = rng.integers(0, 2, 156)
    fired = run_prediction_checks(clean(coin, labels))
    assert "balanced accuracy" in fired["constant_predictor"]


def test_a_useful_model_passes_and_a_weak_one_is_below_the_published_baseline():
    labels = np.array([0] * 42 + [1] * 114)
    good = labels.copy()
    good[:20] = 1 - good[:20]  # 87% accurate, both classes predicted
    assert run_prediction_checks(clean(good, labels)) == {}
    weak = labels.copy()
    weak[:20] = 1 - weak[:20]
    weak[50:70] = 1 - weak[50:70]  # 74% accurate, both ways: more than 0.10 below the published 0.863
    fired = run_prediction_checks(clean(weak, labels))
    assert "constant_predictor" not in fired
    assert "clean ACC 0.744 is more than 0.1 below the published 0.863" in fired["below_published_baseline"]
    assert "below_published_baseline" not in run_prediction_checks(clean(weak, labels, flag="notamedmnistflag"))


def test_a_volume_model_is_held_to_the_published_resnet18_acs():
    labels = np.array([0] * 60 + [1] * 40)
    weak = labels.copy()
    weak[:36] = 1  # 64% accurate: more than 0.10 below AdrenalMNIST3D's ResNet-18 + ACS (0.754)
    fired = run_prediction_checks(clean(weak, labels, flag="adrenalmnist3d"))
    assert "0.640 is more than 0.1 below the published 0.754 (MedMNIST v2, ResNet-18 + ACS (28))" in (
        fired["below_published_baseline"])


def test_multi_label_constant_predictions_are_judged_by_auc():
    """All-negative predictions are normal on ChestMNIST; scores that ignore the input are not."""
    labels = rng.integers(0, 2, (200, 14))
    informative = np.clip(labels * 0.6 + rng.random((200, 14)) * 0.4, 0, 1)
    flat = np.full((200, 14), 0.1) + rng.random((200, 14)) * 1e-3
    preds = np.zeros((200, 14), int)
    make = lambda s: CleanPredictions("chestmnist", 28, "multi-label, binary-class", 14, labels, preds, s)  # noqa: E731
    assert "constant_predictor" not in run_prediction_checks(make(informative))
    assert "at chance" in run_prediction_checks(make(flat))["constant_predictor"]


# --------------------------------------------------------------------------------------------------
# the rules
# --------------------------------------------------------------------------------------------------
def test_the_standard_battery_hash_is_what_a_standard_run_records_and_any_change_breaks_it():
    name, expected, labels = standard_battery("linf")
    assert (name, labels) == ("standard", ("1/255", "2/255", "4/255", "8/255"))
    assert battery_hash(to_dict(compose(["battery=standard"]).battery)) == expected
    fewer_steps = compose(["battery=standard", "battery.attacks.apgd_ce.params.steps=10"]).battery
    fewer_eps = compose(["battery=standard", "battery.attacks.square_linf.epsilons=[8/255]"]).battery
    quick = compose(["battery=quick"]).battery
    for other in (fewer_steps, fewer_eps, quick):
        assert battery_hash(to_dict(other)) not in ("", expected)


def test_a_standard_full_split_evaluation_of_a_checked_model_is_ranked():
    (ev,) = group_evaluations(evaluation_rows())
    assert admit(ev).ranked and admit(ev).status == "ranked"


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({"standard": False}, "battery 'quick' (hash 0000quick000) is not the standard battery 'standard'"),
        ({"n": 64}, "n=64 is a subset of the 156-image test split"),
        ({"split": "val"}, "it attacked the val split, not the test split"),
        ({"flags": "constant_predictor"}, "flagged constant_predictor"),
        ({"flags": "below_published_baseline"}, "flagged below_published_baseline"),
        ({"battery_hash": "", "split": ""}, "its battery hash was not recorded"),
        ({"norm": "l2"}, "no standard battery is defined for l2 tracks yet"),
    ],
)
def test_an_evaluation_that_breaks_a_rule_is_kept_unranked_with_the_reason(overrides, reason):
    (ev,) = group_evaluations(evaluation_rows(**overrides))
    admission = admit(ev)
    assert not admission.ranked and any(reason in r for r in admission.reasons), admission.reasons


def test_warnings_do_not_block_ranking():
    (ev,) = group_evaluations(evaluation_rows(flags="black_box_beats_white_box"))
    assert admit(ev).ranked and admit(ev).warnings == ("black_box_beats_white_box",)


def test_an_evaluation_missing_an_epsilon_is_incomplete():
    (ev,) = group_evaluations(evaluation_rows()[:3])
    assert "no battery row at eps 8/255" in admit(ev).reasons


def test_rules_are_one_registry_printed_by_the_promote_script():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "promote.py"), "--rules"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    for rule in RULES.values():
        assert f"**{rule.name}**: {rule.text}" in proc.stdout


# --------------------------------------------------------------------------------------------------
# a real constant predictor through the real pipeline
# --------------------------------------------------------------------------------------------------
def test_a_real_constant_predictor_is_flagged_and_not_ranked(real_root, trained_breast, tmp_path):
    """A trained ResNet-18 whose head always says 'benign' is flagged on the full test split and never ranked."""
    from bench.models import save_checkpoint

    import copy
    import dataclasses

    model, card = copy.deepcopy(trained_breast[0]), dataclasses.replace(trained_breast[1])  # the fixture stays intact
    with torch.no_grad():
        head = model.backbone.get_classifier()
        head.weight.mul_(1e-3)
        head.bias.copy_(torch.tensor([-5.0, 5.0]))
    weights = tmp_path / "constant.safetensors"
    save_checkpoint(model, card, weights)
    env = {**os.environ, "MEDMNIST_ROOT": str(real_root), "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "attack.py"), f"checkpoint={weights}", "attack=fgsm", "logger=none",
         f"paths.output_root={tmp_path / 'out'}", f"paths.zoo_dir={tmp_path / 'zoo'}"],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "check constant_predictor: predicts class 1 for 100.0% of 156 samples" in proc.stdout
    rows = read_rows(tmp_path / "out" / "leaderboard" / "breastmnist_28_linf.csv")
    assert all("constant_predictor" in r["flags"] and r["n"] == "156" and r["split"] == "test" for r in rows)
    (ev,) = group_evaluations(rows)
    assert any(r.startswith("flagged") and "constant_predictor" in r for r in admit(ev).reasons)


# --------------------------------------------------------------------------------------------------
# promotion: the only way into results/leaderboard
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def local_board(tmp_path) -> Path:
    """A local leaderboard holding one admitted evaluation, a quick smoke run and a subset run."""
    local = tmp_path / "local"
    rows = (evaluation_rows(model="real_seed0", config_hash="std")
            + evaluation_rows((1.0,) * 4, standard=False, model="smoke_seed0", config_hash="quick", n=8)
            + evaluation_rows(model="subset_seed0", config_hash="sub", n=64))
    upsert_rows(track_path(local, "breastmnist", 28, "linf"), rows)
    return local


def test_promotion_copies_only_admitted_evaluations_and_twice_changes_nothing(local_board, tmp_path):
    target = tmp_path / "results" / "leaderboard"
    decisions = promote(local_board, target)
    assert {(d.evaluation.model, d.promote) for d in decisions} == {
        ("real_seed0", True), ("smoke_seed0", False), ("subset_seed0", False)}
    path = target / "breastmnist_28_linf.csv"
    assert {r["model"] for r in read_rows(path)} == {"real_seed0"} and len(read_rows(path)) == 4
    before = path.read_bytes()
    promote(local_board, target)
    assert path.read_bytes() == before


def test_promotion_keeps_unranked_evaluations_only_when_asked_and_a_dry_run_writes_nothing(local_board, tmp_path):
    target = tmp_path / "results" / "leaderboard"
    promote(local_board, target, include_unranked=True, dry_run=True)
    assert not target.exists()
    promote(local_board, target, models=["smoke_seed0"], include_unranked=True)
    (ev,) = group_evaluations(read_rows(target / "breastmnist_28_linf.csv"))
    assert ev.model == "smoke_seed0" and not admit(ev).ranked


def test_a_whole_evaluation_found_unreliable_is_kept_as_a_finding_but_a_smoke_run_is_not(local_board, tmp_path):
    """--include-flagged: a defense whose checks fired is a result (kept, unranked); a subset or quick run is not."""
    flagged = evaluation_rows(model="jpeg_seed0", defense="jpeg(quality=75)", config_hash="jpeg", unreliable="true",
                              flags="black_box_beats_white_box_per_sample")
    upsert_rows(track_path(local_board, "breastmnist", 28, "linf"), flagged)
    target = tmp_path / "results" / "leaderboard"
    decisions = {d.evaluation.model: d for d in promote(local_board, target, include_flagged=True)}
    assert decisions["jpeg_seed0"].promote and decisions["jpeg_seed0"].admission.failed == ("reliable",)
    assert not decisions["smoke_seed0"].promote and not decisions["subset_seed0"].promote
    kept = {ev.model: admit(ev) for ev in group_evaluations(read_rows(target / "breastmnist_28_linf.csv"))}
    assert set(kept) == {"real_seed0", "jpeg_seed0"} and kept["real_seed0"].ranked and not kept["jpeg_seed0"].ranked


def test_the_promote_script_reports_every_decision_and_refuses_a_corrupt_local_file(local_board, tmp_path):
    target = tmp_path / "results" / "leaderboard"
    script = [sys.executable, str(REPO / "scripts" / "promote.py"), "--from", str(local_board), "--to", str(target)]
    proc = subprocess.run(script, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "promoted  breastmnist_28_linf.csv  real_seed0  standard  n=156" in proc.stdout
    assert "kept local  breastmnist_28_linf.csv  smoke_seed0  quick  n=8" in proc.stdout
    assert "1 of 3 evaluation(s) promoted" in proc.stdout
    unknown = subprocess.run(script + ["--model", "nobody"], capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "no evaluation" in unknown.stderr
    before = (target / "breastmnist_28_linf.csv").read_bytes()
    local = local_board / "breastmnist_28_linf.csv"
    local.write_text(local.read_text().replace(",0.85,", ",notanumber,", 1))
    bad = subprocess.run(script, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "line 2, column" in bad.stderr and "(clean_acc) is 'notanumber'" in bad.stderr
    assert (target / "breastmnist_28_linf.csv").read_bytes() == before


# --------------------------------------------------------------------------------------------------
# the baselines table is merged, never replaced
# --------------------------------------------------------------------------------------------------
def test_baselines_script_keeps_committed_rows_the_zoo_lacks(tmp_path, trained_breast):
    from bench.models import save_checkpoint
    from bench.train import TrainConfig
    from bench.zoo import zoo_path

    import dataclasses

    model, card = trained_breast[0], dataclasses.replace(trained_breast[1])
    zoo = tmp_path / "zoo"
    save_checkpoint(model, card, zoo_path(zoo, "breastmnist", 28, card.name, TrainConfig(epochs=8, seed=0)))
    smoke_card = dataclasses.replace(card, seed=1, train={**card.train, "n_train": 64, "seed": 1})
    save_checkpoint(model, smoke_card, zoo_path(zoo, "breastmnist", 28, card.name, TrainConfig(epochs=8, seed=1, n_train=64)))
    out = tmp_path / "medmnist_clean.csv"
    committed = ("dataset,model,seed,test_acc,test_auc,published_acc,published_auc,command\n"
                 "pneumoniamnist,resnet18_28,0,0.8574,0.9502,0.854,0.944,"
                 "python scripts/train.py dataset=pneumoniamnist seed=0 paths.zoo_dir=/some/machine/models\n")
    out.write_text(committed)
    script = [sys.executable, str(REPO / "scripts" / "baselines.py"), "--zoo", str(zoo), "--out", str(out)]
    proc = subprocess.run(script, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "skipped breastmnist_28/resnet18_native_seed1_" in proc.stdout and "subset of 64" in proc.stdout
    import csv

    rows = list(csv.DictReader(out.open()))
    assert [(r["dataset"], r["seed"]) for r in rows] == [("pneumoniamnist", "0"), ("breastmnist", "0")]
    assert rows[0]["command"] == "python scripts/train.py dataset=pneumoniamnist seed=0"  # no machine path
    assert rows[1]["train"].startswith("epochs=8 ") and rows[1]["published_acc"] == "0.863"
    again = subprocess.run(script, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and list(csv.DictReader(out.open())) == rows  # idempotent


def test_rows_from_an_older_local_file_can_be_kept_on_record_unranked(tmp_path):
    """A local file written before the admission facts existed is read, upgraded and promotable with --include-unranked."""
    import csv

    from bench.leaderboard import SCHEMA

    local = tmp_path / "local"
    local.mkdir()
    first = [c.name for c in SCHEMA if c.since == 1]
    with open(local / "breastmnist_28_linf.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=first, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(evaluation_rows(model="old_seed0"))
    target = tmp_path / "results"
    assert not [d for d in promote(local, target) if d.promote]
    promote(local, target, include_unranked=True)
    (ev,) = group_evaluations(read_rows(target / "breastmnist_28_linf.csv"))
    assert ev.model == "old_seed0" and "its battery hash was not recorded" in admit(ev).reasons[0]
