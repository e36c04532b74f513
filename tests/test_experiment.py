"""End to end through the real Hydra entry points, as a user runs them (tiny budgets)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SUMMARY_KEYS = {"dataset", "model", "attack", "norm", "eps", "n", "clean_acc", "robust_acc", "asr",
                "linf_median", "l2_median", "seconds"}


def run_script(script: str, *overrides: str, tmp: Path, root: Path) -> subprocess.CompletedProcess:
    paths = [f"paths.zoo_dir={tmp / 'zoo'}", f"paths.output_root={tmp / 'out'}"]  # rows go to <out>/leaderboard
    env = {**os.environ, "MEDMNIST_ROOT": str(root), "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, str(REPO / "scripts" / script), *overrides, *paths],
                          capture_output=True, text=True, env=env, timeout=900)


TINY = ("train.epochs=1", "train.n_train=64", "dataset.n_examples=16")


def results_state() -> tuple[str, dict[str, str]]:
    """git's view of the tracked results/ folder, and a digest of every file in it."""
    import hashlib

    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", "results"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    files = {str(p.relative_to(REPO)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted((REPO / "results").rglob("*")) if p.is_file()}
    return status, files


def test_quickstart_end_to_end(real_root, tmp_path):
    before = results_state()
    proc = run_script("attack.py", "experiment=quickstart", *TINY, tmp=tmp_path, root=real_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # a smoke run never touches the tracked results: its rows go to the local leaderboard, and it says why
    # they would not be ranked
    assert results_state() == before, "a smoke run changed results/"
    assert "Not rankable:" in proc.stdout and "not the standard battery" in proc.stdout
    assert "robust_acc" in proc.stdout and "battery:quick" in proc.stdout
    summaries = list((tmp_path / "out" / "runs").rglob("summary.json"))
    assert len(summaries) == 1
    # per-sample records are the source of truth, and the summary is derived from them
    (records,) = list((tmp_path / "out" / "records").rglob("meta.json"))
    assert (records.parent / "summary.json").read_text() == summaries[0].read_text()
    rows = json.loads(summaries[0].read_text())
    assert {r["attack"] for r in rows} == {"fgsm", "pgd_linf", "foolbox_linf_pgd", "battery:quick"}
    assert all(SUMMARY_KEYS <= set(r) and r["n"] == 16 for r in rows)
    for r in rows:
        assert 0 <= r["robust_acc"] <= r["clean_acc"] <= 1
    # the battery is the per-sample worst case, so never more robust than any of its attacks
    for eps in {r["eps"] for r in rows}:
        at = [r for r in rows if r["eps"] == eps]
        battery = next(r for r in at if r["attack"] == "battery:quick")
        assert battery["robust_acc"] == min(r["robust_acc"] for r in at)
    # the same rows went to the leaderboard track
    with open(tmp_path / "out" / "leaderboard" / "breastmnist_28_linf.csv") as fh:
        board = list(csv.DictReader(fh))
    assert len(board) == len(rows)
    # an offline W&B run holding the config and the metrics
    runs = list(summaries[0].parent.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    blob = runs[0].read_bytes()
    assert b"pgd_linf" in blob and b"robust_acc" in blob and b"breastmnist" in blob
    # a second run reuses the trained model and replaces (not duplicates) its leaderboard rows
    again = run_script("attack.py", "experiment=quickstart", *TINY, tmp=tmp_path, root=real_root)
    assert again.returncode == 0 and "reusing trained model" in again.stdout
    assert "trained with epochs=1 augment=flip_shift n_train=64" in again.stdout  # a reused model says how it was made
    assert "resuming: 1 of 1 batches already in" in again.stdout  # nothing is attacked twice
    with open(tmp_path / "out" / "leaderboard" / "breastmnist_28_linf.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(rows)


# The quickstart on another dataset and a multirun sweep are lines of the README's usage block, run as written
# by tests/test_readme.py.


def test_train_script_writes_checkpoint_and_card(real_root, tmp_path):
    proc = run_script("train.py", "model=resnet18_native", "train.epochs=2", tmp=tmp_path, root=real_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "epoch   2/2" in proc.stdout and "val_auc" in proc.stdout
    (card_file,) = (tmp_path / "zoo" / "breastmnist_28").glob("resnet18_native_seed0_*.json")
    card = json.loads(card_file.read_text())
    assert card["dataset"] == "breastmnist" and card["arch"] == "resnet18" and len(card["sha256"]) == 64
    assert {"val_auc", "val_acc", "test_auc", "test_acc"} <= set(card["metrics"])
    assert card["train"]["command"].startswith("python scripts/train.py")


def test_a_model_trained_with_other_settings_is_not_reused(real_root, tmp_path):
    """The zoo is keyed by the training settings: a 1-epoch entry is passed over, by name, for a 2-epoch request."""
    cheap = ("model=resnet18_native", "train.n_train=64", "dataset.n_examples=8", "attack=fgsm", "logger=none")
    first = run_script("attack.py", *cheap, "train.epochs=1", tmp=tmp_path, root=real_root)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_script("attack.py", *cheap, "train.epochs=2", tmp=tmp_path, root=real_root)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "reusing trained model" not in second.stdout
    assert "not reusing resnet18_native_seed0_" in second.stdout and "(epochs: 1 there, 2 asked for)" in second.stdout
    zoo = sorted((tmp_path / "zoo" / "breastmnist_28").glob("resnet18_native_seed0_*.safetensors"))
    assert len(zoo) == 2  # both trainings are kept, each under its own training id
    epochs = sorted(json.loads(p.with_suffix(".json").read_text())["train"]["epochs"] for p in zoo)
    assert epochs == [1, 2]
    again = run_script("attack.py", *cheap, "train.epochs=1", tmp=tmp_path, root=real_root)
    assert "reusing trained model" in again.stdout and "trained with epochs=1 " in again.stdout
    rows = list(csv.DictReader(open(tmp_path / "out" / "leaderboard" / "breastmnist_28_linf.csv")))
    assert {r["train"].split()[0] for r in rows} == {"epochs=1", "epochs=2"}  # the two models' rows coexist
    assert len({r["weights_sha256"] for r in rows}) == 2


@pytest.mark.parametrize(
    "override, message",
    [
        ("attack=pgd_inf", "pgd_linf"),                # Hydra lists the attack configs
        ("dataset=pneumonia", "pneumoniamnist"),       # and the dataset configs
        ("model=resnet19", "resnet18_28"),             # and the model recipes
        ("dataset.n_examples=100000", "n_examples=100000"),
        ("dataset.size=32", "available sizes"),
        ("model=vit_tiny dataset=adrenalmnist3d", "cannot be converted to 3D"),
        ("attack.epsilons=[-0.1]", "negative"),
        ("attack=fgsm attack.norm=l2", "supports"),
        ("model.recipe=tiny", "valid choices"),
    ],
)
def test_bad_input_fails_clearly_and_writes_nothing(real_root, tmp_path, override, message):
    cheap = [] if override.startswith("model") else ["model=resnet18_native", *TINY[:2]]
    proc = run_script("attack.py", *override.split(), "logger=none", *cheap, tmp=tmp_path, root=real_root)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert not (tmp_path / "out" / "leaderboard").exists()
    assert not list(tmp_path.rglob("summary.json"))


def test_standard_battery_is_sequential_worst_case(real_root, trained_breast, tmp_path):
    """AutoAttack-style: each attack sees only still-robust samples, so robust accuracy never rises along the battery."""
    budget = ["battery.attacks.apgd_ce.params.steps=10", "battery.attacks.apgd_margin.params.steps=10",
              "battery.attacks.fmn_linf.params.steps=10", "battery.attacks.square_linf.params.max_queries=40",
              "battery.attacks.apgd_ce.epsilons=[2/255,8/255]", "battery.attacks.apgd_margin.epsilons=[2/255,8/255]",
              "battery.attacks.fmn_linf.epsilons=[2/255,8/255]", "battery.attacks.square_linf.epsilons=[2/255,8/255]"]
    proc = run_script("attack.py", "battery=standard", f"checkpoint={trained_breast[2]}", "logger=none",
                      "dataset.n_examples=48", *budget, tmp=tmp_path, root=real_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(next((tmp_path / "out").rglob("summary.json")).read_text())
    order = ["apgd_ce", "apgd_margin", "fmn_linf", "square_linf"]
    for eps in {r["eps"] for r in rows}:
        by_attack = {r["attack"]: r for r in rows if r["eps"] == eps}
        accs = [by_attack[a]["robust_acc"] for a in order]
        assert accs == sorted(accs, reverse=True)
        assert by_attack["battery:standard"]["robust_acc"] == accs[-1]
        assert accs[-1] < by_attack["apgd_ce"]["clean_acc"]  # the battery breaks something at every epsilon
        assert by_attack["square_linf"]["kind"] == "score"
    assert all("flags" in r for r in rows)
    # in the records, a sample broken at some epsilon is never attacked again there (one-pass FMN included)
    from bench.records import RecordSet

    (meta,) = list((tmp_path / "out" / "records").rglob("meta.json"))
    frame = RecordSet.load(meta.parent).read()
    for (index, eps), group in frame.groupby(["index", "eps"]):
        broken = False
        for r in group.sort_values("stage").itertuples():
            assert not (broken and r.attacked), (index, eps, r.attack)
            broken = broken or (r.attacked and not r.adv_correct)
