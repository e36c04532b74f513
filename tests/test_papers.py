"""Paper reproductions: the binary views of multi-class files, Finlayson et al.'s patch, and each paper's
experiment run end to end with a tiny budget into its table."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from bench.attacks import build_attack, check_threat_model
from bench.data import BINARY_VIEWS, dataset_info, load_split
from bench.papers import PAPERS
from tests.conftest import REPO


def test_melanoma_view_keeps_melanoma_and_nevus_only_with_their_positions_in_the_full_split(synthetic):
    full = load_split("dermamnist", "test", root=synthetic)
    view = load_split("dermamnist_melanoma", "test", root=synthetic)
    kept = np.isin(full.labels.numpy(), (4, 5))
    assert view.info.task_type == "binary-class" and view.info.num_classes == 2
    assert view.indices.tolist() == np.nonzero(kept)[0].tolist()
    assert view.labels.tolist() == (full.labels[torch.from_numpy(kept)] == 4).long().tolist()
    assert torch.equal(view.images, full.images[torch.from_numpy(kept)])
    # a subset of a view stays a subset of the same samples, still named by their full-split positions
    sub = load_split("dermamnist_melanoma", "test", root=synthetic, n_examples=3, seed=0)
    assert set(sub.indices.tolist()) <= set(view.indices.tolist())


def test_referable_view_keeps_every_fundus_and_marks_grade_two_and_above(synthetic):
    full = load_split("retinamnist", "test", root=synthetic)
    view = load_split("retinamnist_referable", "test", root=synthetic)
    assert len(view) == len(full) and view.info.filename == "retinamnist.npz"
    assert view.labels.tolist() == (full.labels >= 2).long().tolist()


def test_an_unknown_flag_names_the_views_among_the_choices():
    with pytest.raises(Exception, match="dermamnist_melanoma"):
        dataset_info("dermamnist_melanom")
    assert set(BINARY_VIEWS.names()) >= {"dermamnist_melanoma", "retinamnist_referable"}


def finlayson_patch(**params):
    base = {"shape": "circle", "rotation": 22.5, "location": "random", "train_steps": 3, "train_samples": 32,
            "batch_size": 16, "target": "opposite"}
    return build_attack("patch", "patch", 0, {**base, **params})


def test_a_rotated_circular_patch_changes_only_pixels_of_one_square_of_its_side(trained_breast, real_root, tmp_path):
    from bench.attacks.base import AttackContext
    from bench.train import TrainConfig

    model, card, _ = trained_breast
    test = load_split("breastmnist", "test", root=real_root, n_examples=24, seed=0)
    attack = finlayson_patch()
    attack.prepare(AttackContext(test.info, str(real_root), str(tmp_path), TrainConfig(epochs=1), "cpu", card))
    (out,) = attack(model, test.images, test.labels, [0.4], test.info.task)  # the engine checks the threat model
    side = round(0.4 * 28)
    changed = (out.x_adv != test.images).any(1)
    for mask in changed:
        rows, cols = mask.nonzero().T
        assert int(rows.max() - rows.min()) < side and int(cols.max() - cols.min()) < side
        assert mask.sum() < side * side  # a disk (rotated, its edge blended), never the square's corners
    check_threat_model(test.images, out.x_adv, 0.4, "patch", "patch")


def test_the_natural_patch_is_a_photograph_the_same_for_every_run_and_needs_no_model(real_root):
    from bench.attacks.patch import natural_patch

    grey, colour = natural_patch(1, 11), natural_patch(3, 11)
    assert grey.shape == (1, 11, 11) and colour.shape == (3, 11, 11)
    assert torch.equal(natural_patch(1, 11), grey) and 0.05 < float(grey.std()) and 0 <= float(grey.min())
    test = load_split("breastmnist", "test", root=real_root, n_examples=8, seed=0)
    attack = finlayson_patch(source="natural")
    attack.prepare(None)  # nothing to learn, nothing to load
    (patch,) = attack.make_patches(None, 0.4, test.images, test.info.task).values()  # no model at all
    assert torch.equal(patch, grey)
    first = attack.apply(test.images, patch, torch.Generator().manual_seed(1))
    again = attack.apply(test.images, patch, torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and not torch.equal(first, test.images)
    check_threat_model(test.images, first, 0.4, "patch", "patch")


def test_a_black_box_patch_is_learned_on_the_surrogate_and_never_propagates_through_the_target(trained_breast, real_root, tmp_path):
    from bench.attacks.base import AttackContext
    from bench.train import TrainConfig

    model, card, path = trained_breast
    test = load_split("breastmnist", "test", root=real_root, n_examples=16, seed=0)
    attack = finlayson_patch(surrogate_checkpoint=str(path))
    context = AttackContext(test.info, str(real_root), str(tmp_path), TrainConfig(epochs=1), "cpu", None)
    attack.prepare(context)
    (out,) = attack(model, test.images, test.labels, [0.4], test.info.task)
    assert out.forwards == 0 and out.backwards == 0
    with pytest.raises(Exception, match="surrogate is the target model itself"):
        finlayson_patch(surrogate_checkpoint=str(path)).prepare(
            AttackContext(test.info, str(real_root), str(tmp_path), TrainConfig(epochs=1), "cpu", card))


def test_bad_patch_settings_name_the_choices():
    with pytest.raises(Exception, match="circle"):
        finlayson_patch(shape="triangle")
    with pytest.raises(Exception, match="degrees"):
        finlayson_patch(rotation=400)
    with pytest.raises(Exception, match="no surrogate"):
        finlayson_patch(source="natural", surrogate="resnet18_native")


@pytest.mark.slow
def test_finlayson2018_runs_end_to_end_into_its_table(real_root, tmp_path):
    """The paper's command, on the real PneumoniaMNIST file with a tiny budget: every attack of the experiment
    runs (the learned patches with 2 steps; ResNet-18 for speed), and the table has the paper's columns, one row
    per attack."""
    out = tmp_path / "out"
    cheap = ["model=resnet18_native", "train.epochs=1", "train.n_train=64", "dataset.n_examples=16", "logger=none",
             "finlayson2018.patch_train_steps=2", f"paths.zoo_dir={tmp_path / 'zoo'}", f"paths.output_root={out}", "eval.model_form=torch_eager"]
    table = tmp_path / "finlayson2018.csv"
    env = {**os.environ, "MEDMNIST_ROOT": str(real_root)}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "paper.py"), "finlayson2018", "--datasets",
                           "pneumoniamnist", "--out", str(table), "--", *cheap],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    with open(table) as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == PAPERS["finlayson2018"].columns
    assert {(r["attack"], r["access"]) for r in rows} == {
        ("pgd", "white-box"), ("pgd", "black-box"), ("adversarial_patch", "white-box"),
        ("adversarial_patch", "black-box"), ("natural_patch", "black-box")}
    for r in rows:
        assert r["dataset"] == "pneumoniamnist" and r["model"].startswith("resnet18_native_seed0")
        assert 0 <= float(r["attacked_acc_ci_low"]) <= float(r["attacked_acc"]) <= float(r["attacked_acc_ci_high"]) <= 1
    published = {r["attack"] + r["access"]: r["published_attacked_acc"] for r in rows}
    assert published["adversarial_patchblack-box"] == "0.097" and published["pgdwhite-box"] == ""
    # rebuilding from the rows on disk gives the same table
    again = subprocess.run([sys.executable, str(REPO / "scripts" / "paper.py"), "finlayson2018", "--table-only",
                            "--out", str(tmp_path / "again.csv"), "--", f"paths.output_root={out}"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again.csv").read_text() == table.read_text()


def test_the_spread_summary_sees_a_stress_spread_that_clean_accuracy_hides():
    from bench.papers.underspecification import spread_summary

    rng = np.random.default_rng(0)
    n, models = 400, 10
    truth = rng.random(n) < 0.85
    clean = np.stack([truth] * models).astype(float)  # ten models, identical on clean data...
    clean[:, :5] = rng.random((models, 5)) < 0.5       # ...up to a few coin flips
    robust = np.stack([rng.random(n) < p for p in np.linspace(0.2, 0.7, models)]).astype(float)  # ...not under attack
    rows = {r["metric"]: r for r in spread_summary({"clean_acc": clean, "robust_acc@2/255": robust}, resamples=300)}
    stressed = rows["robust_acc@2/255"]
    assert stressed["spread_sd"] > 5 * rows["clean_acc"]["spread_sd"]
    assert stressed["ratio_lo"] > 1 and stressed["spread_sd_lo"] > stressed["sampling_sd"]
    assert rows["clean_acc"]["ratio_to_clean"] == pytest.approx(1.0)


def test_the_seed_zero_model_in_its_own_order_belongs_to_both_comparisons():
    from bench.papers.underspecification import variants

    row = {"tag": "underspecification", "kind": "gradient", "model": "resnet18_native_seed0", "train": "epochs=30"}
    assert variants(row) == ["seed", "data_order"]
    assert variants({**row, "model": "resnet18_native_seed3"}) == ["seed"]
    assert variants({**row, "train": "epochs=30 data_order_seed=4"}) == ["data_order"]
    assert variants({**row, "tag": "other"}) == []


@pytest.mark.slow
def test_underspecification_sweeps_and_builds_its_tables_and_figure(real_root, tmp_path):
    """Both sweeps of the experiment file (2 models each, tiny budget), then the per-model table, the spread
    summary and the figure from their rows and per-sample records."""
    out = tmp_path / "out"
    cheap = ["train.epochs=1", "train.n_train=64", "dataset.n_examples=24", "logger=none",
             "eval.model_form=torch_eager", f"paths.zoo_dir={tmp_path / 'zoo'}", f"paths.output_root={out}"]
    env = {**os.environ, "MEDMNIST_ROOT": str(real_root)}
    attack = [sys.executable, str(REPO / "scripts" / "attack.py"), "-m", "experiment=underspecification"]
    corrupt = [sys.executable, str(REPO / "scripts" / "corrupt.py"), "-m", "experiment=underspecification",
               "corruption.names=[pixelate,speckle_noise]"]
    for sweep in (["train.seed=0,1"], ["train.seed=0", "train.data_order_seed=0,1"]):
        for script in (attack, corrupt):  # what scripts/paper.py runs: the attack sweep, then the corruption sweep
            proc = subprocess.run([*script, *sweep, *cheap], capture_output=True, text=True, env=env, timeout=900)
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    table = tmp_path / "underspecification.csv"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "paper.py"), "underspecification", "--table-only",
                           "--out", str(table), "--", f"paths.output_root={out}"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    with open(table) as fh:
        rows = list(csv.DictReader(fh))
    # seed 0 (own order) is in both comparisons: 3 distinct models, 4 memberships, 2 epsilons each
    assert len(rows) == 8 and {r["eps_label"] for r in rows} == {"1/255", "2/255"}
    assert sorted((r["variant"], r["train_seed"], r["data_order_seed"]) for r in rows if r["eps_label"] == "1/255") == [
        ("data_order", "0", "0"), ("data_order", "0", "1"), ("seed", "0", "0"), ("seed", "1", "1")]
    with open(tmp_path / "underspecification_spread.csv") as fh:
        spread = list(csv.DictReader(fh))
    assert {(r["variant"], r["metric"]) for r in spread} == {
        (v, m) for v in ("seed", "data_order") for m in (
            "clean_acc", "robust_acc@1/255", "robust_acc@2/255", "clean_balanced_error", "balanced_error@pixelate",
            "balanced_error@speckle_noise", "balanced_error@mean")}
    # balanced errors are compared with the clean balanced error's spread, accuracies with clean accuracy's
    assert {r["reference"] for r in spread if "balanced_error" in r["metric"]} == {"clean_balanced_error"}
    assert {r["reference"] for r in spread if "acc" in r["metric"]} == {"clean_acc"}
    assert all(r["n_models"] == "2" and r["dataset"] == "breastmnist" for r in spread)
    assert (tmp_path / "underspecification.png").stat().st_size > 10_000


def test_a_targeted_patch_is_learned_per_target_class_and_each_image_gets_its_targets(trained_breast, real_root, tmp_path):
    """With the opposite-class rule one shared patch would have to push both classes across at once, so a
    targeted patch is learned per target class (on the train images sent there) and pasted by target."""
    from bench.attacks.base import AttackContext
    from bench.train import TrainConfig

    model, card, _ = trained_breast
    test = load_split("breastmnist", "test", root=real_root, n_examples=24, seed=0)
    context = AttackContext(test.info, str(real_root), str(tmp_path), TrainConfig(epochs=1), "cpu", card)
    attack = finlayson_patch(shape="square", rotation=0, location="top_left", train_steps=2)
    attack.prepare(context)
    (out,) = attack(model, test.images, test.labels, [0.4], test.info.task)
    patches = attack.patches[0.4]
    assert set(patches) == {0, 1} and not torch.equal(patches[0], patches[1])
    side = round(0.4 * 28)
    for image, target in zip(out.x_adv, attack.last_criterion.target.tolist()):
        assert torch.allclose(image[:, :side, :side], patches[target])


@pytest.mark.slow
def test_medmnist_baselines_trains_both_resnets_and_tables_them_beside_the_published_numbers(real_root, tmp_path):
    """The experiment on BreastMNIST with a token budget (1 epoch on 32 images, seed 0 only; ResNet-50's 28x28 stem
    costs 4x ResNet-18's, so seed 1 gets ResNet-18 alone): one zoo model per ResNet and seed, one table line per
    ResNet with its seeds, marked as not the paper's recipe; a rerun reuses the models."""
    env = {**os.environ, "MEDMNIST_ROOT": str(real_root)}
    table = tmp_path / "medmnist_baselines.csv"
    command = [sys.executable, str(REPO / "scripts" / "paper.py"), "medmnist_baselines", "--datasets", "breastmnist",
               "--out", str(table), "--", "train.epochs=1", "train.n_train=32", "train.seed=0", "logger=none",
               f"paths.zoo_dir={tmp_path / 'zoo'}", f"paths.output_root={tmp_path / 'out'}"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    with open(table) as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["dataset"], r["model"], r["n_seeds"], r["paper_recipe"]) for r in rows] == [
        ("breastmnist", "resnet18_28", "1", "false"), ("breastmnist", "resnet50_28", "1", "false")]
    more = [*command[:-4], "train.seed=1", "model=resnet18_28", *command[-3:]]  # the sweep's model list overridden
    assert subprocess.run(more, capture_output=True, text=True, env=env, timeout=900).returncode == 0
    with open(table) as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["model"], r["n_seeds"], r["seeds"]) for r in rows] == [("resnet18_28", "2", "0 1"), ("resnet50_28", "1", "0")]
    assert rows[0]["test_acc_sd"] != "" and rows[1]["test_acc_sd"] == ""
    assert [(r["published_acc"], r["published_auc"]) for r in rows] == [("0.863", "0.901"), ("0.812", "0.857")]
    assert all("epochs=1 " in r["train"] and "n_train=32" in r["train"] and 0 <= float(r["test_acc_mean"]) <= 1
               for r in rows)
    again = subprocess.run(more, capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 0 and again.stdout.count("not training again") == 1


def test_only_the_papers_recipe_is_marked_as_a_reproduction(tmp_path):
    import json

    from bench.papers.medmnist_baselines import PAPER_RECIPE, collect

    def card(seed: int, acc: float, **train) -> None:
        folder = tmp_path / "breastmnist_28"
        folder.mkdir(exist_ok=True)
        (folder / f"resnet18_28_seed{seed}_{len(train)}.json").write_text(json.dumps({
            "name": "resnet18_28", "dataset": "breastmnist", "size": 28, "seed": seed,
            "metrics": {"test_acc": acc, "test_auc": acc + 0.05},
            "train": {**{k: v for k, v in PAPER_RECIPE.items()}, "seed": seed, **train}}))

    for seed, acc in ((0, 0.80), (1, 0.84), (2, 0.88)):
        card(seed, acc)
    card(0, 0.7, epochs=20)
    rows = collect(tmp_path)
    assert [(r["paper_recipe"], r["n_seeds"], r["seeds"]) for r in rows] == [("true", 3, "0 1 2"), ("false", 1, "0")]
    assert rows[0]["test_acc_mean"] == "0.8400" and rows[0]["test_acc_sd"] == "0.0400" and rows[1]["test_acc_sd"] == ""


def test_every_timm_family_of_conf_model_is_in_the_zoo_study_with_a_budget_per_dataset():
    """A family is a timm architecture: the zoo trains one recipe of each (the 28/224 ResNet recipes are variants of
    ResNet-18/-50), and a new architecture in conf/model/ must be given its budget here."""
    import yaml

    from bench.papers.zoo import DATASETS, FAMILIES

    arch = {p.stem: yaml.safe_load(p.read_text())["arch"] for p in (REPO / "conf" / "model").glob("*.yaml")}
    assert set(FAMILIES) <= set(arch)
    assert {arch[f] for f in FAMILIES} == set(arch.values())
    assert all(set(b.epochs) == set(DATASETS) and min(b.epochs.values()) > 0 for b in FAMILIES.values())
    runs = PAPERS["zoo"].runs_on("pneumoniamnist")
    assert ("model=vit_tiny", f"train.epochs={FAMILIES['vit_tiny'].epochs['pneumoniamnist']}", "train.lr=0.0003") in runs


def test_the_zoo_counts_each_model_once_from_its_familys_declared_budget_else_from_its_newest_training():
    """A family whose budget changed (ConvNeXt: 30 epochs, then 60) has rows of both trainings on disk; the study
    must not pool them as two evaluations of one model, nor mix budgets within a family."""
    from bench.papers.zoo import FAMILIES, one_training_per_model

    declared = FAMILIES["convnext_atto"].describe("breastmnist")
    old = declared.replace(f"epochs={FAMILIES['convnext_atto'].epochs['breastmnist']} ", "epochs=30 ")
    smoke = declared.replace("n_train=all", "n_train=32")

    def row(model, train, date, eps="1/255"):
        return {"dataset": "breastmnist", "model": model, "train": train, "date": date, "eps_label": eps}

    rows = [row("convnext_atto_seed0", old, "2026-12-05T10"), row("convnext_atto_seed0", declared, "2026-12-04T10"),
            row("convnext_atto_seed0", declared, "2026-12-04T10", "2/255"), row("convnext_atto_seed1", old, "2026-12-05T10"),
            row("mystery_net_seed0", old, "2026-12-01"), row("mystery_net_seed0", smoke, "2026-12-02")]
    kept = one_training_per_model(rows)
    assert [(r["model"], r["train"], r["eps_label"]) for r in kept] == [
        ("convnext_atto_seed0", declared, "1/255"), ("convnext_atto_seed0", declared, "2/255"),  # the declared budget, though older
        ("convnext_atto_seed1", old, "1/255"),  # not yet run at its budget: its only training
        ("mystery_net_seed0", smoke, "1/255")]  # no declared budget: the newest training


def test_families_are_compared_by_how_much_of_their_clean_accuracy_survives_with_seeds_and_test_sampling_as_noise():
    from bench.papers.zoo import FamilySamples, compare_families

    rng = np.random.default_rng(0)
    n = 600

    def family(clean_p, survive_p, seeds=2):
        clean = (rng.random((seeds, n)) < clean_p).astype(float)
        return clean, clean * (rng.random((seeds, n)) < survive_p)

    ref_clean, ref_robust = family(0.85, 0.5)
    families = {"resnet18_native": FamilySamples(ref_clean, {"2/255": ref_robust})}
    # more accurate, but half of the images it adds fall under attack, as the reference's do: higher robust
    # accuracy, the same robust rate
    gained = (1 - ref_clean) * (rng.random((2, n)) < 0.7)
    accurate_clean = ref_clean + gained
    accurate_robust = ref_robust + gained * (np.arange(n) % 2 == 0)
    families["accurate"] = FamilySamples(accurate_clean, {"2/255": accurate_robust})
    # less accurate but far more robust per correct image
    sturdy_clean, sturdy_robust = family(0.75, 0.8)
    families["sturdy"] = FamilySamples(sturdy_clean, {"2/255": sturdy_robust})
    # far more robust on one seed only: the test set separates it, the seeds do not
    lucky_clean, lucky_robust = family(0.85, 0.5)
    lucky_robust[0] = lucky_clean[0] * (rng.random(n) < 0.9)
    families["lucky"] = FamilySamples(lucky_clean, {"2/255": lucky_robust})
    families["flagged"] = FamilySamples(sturdy_clean, {"2/255": sturdy_robust}, ("constant_predictor",))
    families["one_seed"] = FamilySamples(sturdy_clean[:1], {"2/255": sturdy_robust[:1]})
    rows = {r["family"]: r for r in compare_families(families, resamples=300)}
    assert rows["accurate"]["robust_acc"] > rows["resnet18_native"]["robust_acc"]
    assert rows["accurate"]["verdict"] == "within noise" and "interval" in rows["accurate"]["reason"]
    assert rows["sturdy"]["robust_acc"] < 0.7 and rows["sturdy"]["verdict"] == "more robust"
    assert rows["sturdy"]["delta_lo"] > 0.2 and rows["sturdy"]["robust_rate_lo"] > rows["resnet18_native"]["robust_rate_hi"]
    assert rows["lucky"]["delta_lo"] > 0 and rows["lucky"]["verdict"] == "within noise"
    assert "seeds" in rows["lucky"]["reason"]
    assert rows["flagged"]["verdict"] == "not comparable" and "constant_predictor" in rows["flagged"]["reason"]
    # as far from the reference as "sturdy", but one seed cannot show that seeds do not explain it
    assert rows["one_seed"]["delta_lo"] > 0.2 and rows["one_seed"]["verdict"] == "within noise"
    assert "fewer than 2 seeds" in rows["one_seed"]["reason"]
    assert rows["resnet18_native"]["verdict"] == "" and rows["resnet18_native"]["n_seeds"] == 2


@pytest.mark.slow
def test_the_zoo_study_trains_and_attacks_each_family_and_tables_the_comparison(real_root, tmp_path):
    """Two families (the reference and MobileNetV3-Small), one seed, tiny budgets: the experiment file composes
    for both commands, and the per-model table, the family comparison and the figure come from the rows and
    per-sample records."""
    out = tmp_path / "out"
    cheap = ["seed=0", "train.epochs=1", "train.n_train=32", "dataset.n_examples=16", "logger=none",
             "eval.model_form=torch_eager", "checks.evaluation=false", "battery.attacks.apgd_ce.params.steps=3",
             "battery.attacks.apgd_margin.params.steps=3", "battery.attacks.fmn_linf.params.steps=3",
             "battery.attacks.square_linf.params.max_queries=10", f"paths.zoo_dir={tmp_path / 'zoo'}",
             f"paths.output_root={out}"]
    env = {**os.environ, "MEDMNIST_ROOT": str(real_root)}
    for script in ("train.py", "attack.py"):  # what scripts/paper.py zoo runs per family, the trainings first
        proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), "-m", "experiment=zoo",
                               "model=resnet18_native,mobilenetv3_small", *cheap, *(["reuse=true"] * (script == "train.py"))],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("reusing trained model") == 2  # the attacks ran on the models the trainings made
    table = tmp_path / "zoo" / "zoo.csv"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "paper.py"), "zoo", "--table-only", "--out", str(table),
                           "--", f"paths.output_root={out}"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    with open(table) as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["family"], r["seed"]) for r in rows} == {("resnet18_native", "0"), ("mobilenetv3_small", "0")}
    assert sorted({r["eps_label"] for r in rows}) == ["1/255", "2/255", "4/255", "8/255"]
    with open(table.with_name("families.csv")) as fh:
        families = list(csv.DictReader(fh))
    assert len(families) == 8 and {r["reference"] for r in families if r["family"] == "mobilenetv3_small"} == {"resnet18_native"}
    assert all(0 <= float(r["robust_rate"]) <= 1 for r in families if r["robust_rate"] != "nan")
    assert table.with_name("families.png").stat().st_size > 10_000


def _committed(path, columns, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def test_a_rebuilt_table_keeps_the_committed_rows_this_machine_measured_nothing_for(tmp_path):
    """A fresh machine that retrains BreastMNIST's ResNet-18 baselines must not erase PneumoniaMNIST's, or
    BreastMNIST's ResNet-50, measured elsewhere: rows are replaced per (dataset, model, training settings), the rest
    kept, so a model retrained in bf16 is a row beside the float32 one, never in its place."""
    import json

    from bench.cli.paper import write_table
    from bench.papers.medmnist_baselines import PAPER_RECIPE
    from bench.zoo import describe_training

    paper = PAPERS["medmnist_baselines"]
    out = tmp_path / "medmnist_baselines.csv"
    old, recipe = {c: "" for c in paper.columns}, describe_training(PAPER_RECIPE)
    _committed(out, list(paper.columns), [
        {**old, "dataset": "breastmnist", "model": "resnet18_28", "train": recipe, "test_acc_mean": "0.1000"},
        {**old, "dataset": "breastmnist", "model": "resnet50_28", "train": recipe, "test_acc_mean": "0.2000"},
        {**old, "dataset": "pneumoniamnist", "model": "resnet18_28", "train": recipe, "test_acc_mean": "0.3000"}])
    for flag, precision, acc in (("breastmnist", "fp32", 0.8), ("pneumoniamnist", "bf16", 0.9)):
        (tmp_path / "zoo" / f"{flag}_28").mkdir(parents=True)
        (tmp_path / "zoo" / f"{flag}_28" / "resnet18_28_seed0.json").write_text(json.dumps({
            "name": "resnet18_28", "dataset": flag, "size": 28, "seed": 0,
            "metrics": {"test_acc": acc, "test_auc": 0.85}, "train": {**PAPER_RECIPE, "seed": 0, "precision": precision}}))
    assert write_table(paper, tmp_path / "no_rows", tmp_path / "no_records", out, tmp_path / "zoo") == 4
    rows = list(csv.DictReader(open(out)))
    assert [(r["dataset"], r["model"], r["train"].endswith("precision=bf16"), r["test_acc_mean"]) for r in rows] == [
        ("breastmnist", "resnet18_28", False, "0.8000"), ("breastmnist", "resnet50_28", False, "0.2000"),
        ("pneumoniamnist", "resnet18_28", False, "0.3000"), ("pneumoniamnist", "resnet18_28", True, "0.9000")]
    assert {r["paper_recipe"] for r in rows if r["test_acc_mean"] in ("0.8000", "0.9000")} == {"true"}


def test_summaries_keep_the_committed_lines_of_kept_datasets_and_figures_stay_as_committed(tmp_path):
    """Summaries and figures are built from per-sample records: a summary CSV merges per dataset, a figure that
    would lose a dataset is not rewritten, and nothing is rebuilt from part of a dataset's models."""
    from bench.cli.paper import write_table
    from bench.papers.base import Paper

    def extra(rows, records_root, out, corruption_rows):
        out.with_name("toy.png").write_bytes(b"new figure")
        return [(out.with_name("toy_spread.csv"), "dataset,sd\nbreastmnist,0.9\n"), (out.with_name("toy.png"), None)]

    def run(measured: list[dict[str, object]]) -> None:
        paper = Paper(name="toy", experiment="toy", datasets=("breastmnist", "pneumoniamnist"),
                      columns=("dataset", "model", "acc"), rows=lambda row: [], sort_by=("dataset", "model"),
                      kept_by=("dataset", "model"), table=lambda zoo: measured, extra=extra)
        write_table(paper, tmp_path / "no_rows", tmp_path / "no_records", tmp_path / "toy.csv", tmp_path)

    _committed(tmp_path / "toy.csv", ["dataset", "model", "acc"],
               [{"dataset": "breastmnist", "model": "a", "acc": "0.1"},
                {"dataset": "pneumoniamnist", "model": "a", "acc": "0.2"}])
    _committed(tmp_path / "toy_spread.csv", ["dataset", "sd"],
               [{"dataset": "breastmnist", "sd": "0.1"}, {"dataset": "pneumoniamnist", "sd": "0.2"}])
    (tmp_path / "toy.png").write_bytes(b"committed figure")
    run([{"dataset": "breastmnist", "model": "a", "acc": "0.7"}])
    assert (tmp_path / "toy_spread.csv").read_text() == "dataset,sd\nbreastmnist,0.9\npneumoniamnist,0.2\n"
    assert (tmp_path / "toy.png").read_bytes() == b"committed figure"
    # a kept row of a dataset this machine also measured: its summary would come from part of its models
    _committed(tmp_path / "toy.csv", ["dataset", "model", "acc"], [{"dataset": "breastmnist", "model": "b", "acc": "0.3"}])
    run([{"dataset": "breastmnist", "model": "a", "acc": "0.7"}])
    assert (tmp_path / "toy_spread.csv").read_text() == "dataset,sd\nbreastmnist,0.9\npneumoniamnist,0.2\n"
    assert [r["model"] for r in csv.DictReader(open(tmp_path / "toy.csv"))] == ["a", "b"]
    # nothing kept: every output is rebuilt
    run([{"dataset": "breastmnist", "model": "a", "acc": "0.7"}, {"dataset": "breastmnist", "model": "b", "acc": "0.4"}])
    assert (tmp_path / "toy.png").read_bytes() == b"new figure"
