"""Defense submissions (bench/submission.py, scripts/submit.py): the example is accepted and evaluated; every bad
submission is rejected before any compute with a message naming the problem, and nothing is written anywhere."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load, save_file

from bench.submission import SubmissionError, evaluate_submission, schema_fields
from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "submission"
# the smallest budget that still runs every attack of the battery and every adaptive attack and check
TINY = ("dataset.n_examples=8", "battery.attacks.apgd_ce.params.steps=4", "battery.attacks.apgd_margin.params.steps=4",
        "battery.attacks.fmn_linf.params.steps=4", "battery.attacks.square_linf.params.max_queries=10")


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under ``roots`` with a digest of its content: equal snapshots, nothing written."""
    out = {}
    for root in roots:
        if not root.exists():
            continue
        for p in sorted(root.rglob("*")):
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


@pytest.fixture
def submission(tmp_path) -> Path:
    """A copy of the example submission to mutate."""
    folder = tmp_path / "submission"
    shutil.copytree(EXAMPLE, folder)
    return folder


def paths(tmp_path: Path) -> list[str]:
    return [f"paths.output_root={tmp_path / 'out'}", f"paths.zoo_dir={tmp_path / 'zoo'}"]


def edit_yaml(folder: Path, change) -> None:
    path = folder / "submission.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def edit_weights(folder: Path, change) -> None:
    path = folder / "model.safetensors"
    state = load(path.read_bytes())  # in memory: load_file maps the file, which is then overwritten
    change(state)
    save_file(state, str(path))


# --------------------------------------------------------------------------------------------------
# test-only components: what a buggy registered recipe or a lying registered defense would do
# --------------------------------------------------------------------------------------------------
def one_logit_recipe(arch, in_chans, num_classes, pretrained=False, **_):
    """A recipe whose model returns one column whatever the number of classes (same tensors as ``native``)."""
    from bench.models import native

    model = native(arch, in_chans, num_classes, pretrained)
    full = model.forward
    model.forward = lambda x: full(x)[:, :1]
    return model


def register_noisy_defense(monkeypatch) -> None:
    """A registered defense that declares itself deterministic but adds fresh noise on every call."""
    from bench.defenses import DEFENSES, Declaration, Defense

    class Noisy(Defense):
        name = "noisy_test"
        declaration = Declaration()

        def classify(self, x):
            return self.model(x) + torch.randn(x.shape[0], 2)

    monkeypatch.setitem(DEFENSES._entries, "noisy_test", Noisy)


def set_in(*keys, value):
    def change(data):
        node = data
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return change


def drop(*keys):
    def change(data):
        node = data
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]
    return change


def write_text(text: str):
    return lambda folder: (folder / "submission.yaml").write_text(text)


def yaml_change(change):
    return lambda folder: edit_yaml(folder, change)


def weights_change(change):
    return lambda folder: edit_weights(folder, change)


def replace_weights(data: bytes):
    return lambda folder: (folder / "model.safetensors").write_bytes(data)


def truncate_fc(state):
    state["backbone.fc.weight"] = state["backbone.fc.weight"][:1].clone()


def nan_weights(state):
    state["backbone.fc.bias"] = torch.full_like(state["backbone.fc.bias"], float("nan"))


def torch_saved(folder: Path) -> None:
    path = folder / "model.safetensors"
    torch.save(load(path.read_bytes()), path)


# case -> (mutation of the example folder, fragment of the rejection message, extra setup)
BAD = {
    "malformed_yaml": (write_text("name: [unclosed\ntrack: {"), r"is not valid YAML .*line", None),
    "yaml_python_tag": (write_text("name: !!python/object/apply:os.getcwd []\n"), r"is not valid YAML", None),
    "not_a_mapping": (write_text("- just\n- a list\n"), r"must be a mapping with keys name, authors", None),
    "missing_field": (yaml_change(drop("reported")), r"`reported` is missing .*Add it", None),
    "missing_nested_field": (yaml_change(drop("track", "norm")), r"`track.norm` is missing", None),
    "unknown_field": (yaml_change(set_in("licence", value="MIT")), r"`licence` is not a field .*name, authors", None),
    "authors_not_a_list": (yaml_change(set_in("authors", value="A. Person")), r"`authors` .*non-empty list", None),
    "paper_not_a_link": (yaml_change(set_in("paper", value="arxiv 1711.00117")), r"`paper` .*neither an http", None),
    "target_in_model": (yaml_change(set_in("model", "_target_", value="mypkg.Net")),
                        r"`model._target_` is not allowed: a submission never imports its own code", None),
    "unknown_arch": (yaml_change(set_in("model", "arch", value="resnet18x")),
                     r"`model.arch` = 'resnet18x' is not a timm architecture; similar names: .*resnet18", None),
    "unknown_recipe": (yaml_change(set_in("model", "recipe", value="tiny_stem")),
                       r"`model.recipe` = 'tiny_stem' is not one of: cifar_stem, native, resize", None),
    "unknown_dataset": (yaml_change(set_in("track", "dataset", value="brainmnist")),
                        r"`track.dataset` = 'brainmnist' is not one of: .*breastmnist", None),
    "bad_size": (yaml_change(set_in("track", "size", value=32)), r"`track.size` = 32: size 32 is not available", None),
    "l2_track": (yaml_change(set_in("track", "norm", value="l2")), r"`track.norm` = 'l2' is not one of: linf", None),
    "unknown_defense": (yaml_change(set_in("defense", "name", value="feature_squeeze")),
                        r"`defense.name` = 'feature_squeeze' is not one of: bit_depth, jpeg, median, none", None),
    "unknown_defense_param": (yaml_change(set_in("defense", "params", "quallity", value=50)),
                              r"`defense.params.quallity` is not a parameter of 'jpeg'; its parameters are: quality",
                              None),
    "bad_defense_param": (yaml_change(set_in("defense", "params", "quality", value=0)),
                          r"`defense.params` are invalid: jpeg quality must be in 1..100", None),
    "declared_differentiable": (yaml_change(set_in("defense", "declaration", "differentiable", value=True)),
                                (r"`defense.declaration.differentiable` = true contradicts the registered defense "
                                 r"'jpeg' .*Declare differentiable: false"), None),
    "declared_randomised": (yaml_change(set_in("defense", "declaration", "randomised", value=True)),
                            r"`defense.declaration.randomised` = true contradicts", None),
    "declaration_missing": (yaml_change(drop("defense", "declaration", "differentiable")),
                            r"`defense.declaration.differentiable` is missing", None),
    "training_contradicts_defense": (yaml_change(set_in("training", "method", value="pgd_at")),
                                     r"`training.method` = 'pgd_at' is the training of defense pgd_at", None),
    "reported_percent": (yaml_change(set_in("reported", "2/255", value=61.5)),
                         r"`reported\['2/255'\]` = 61.5 must be .*fraction .*write 0.615", None),
    "reported_other_eps": (yaml_change(set_in("reported", "3/255", value=0.5)),
                           (r"`reported\['3/255'\]` is not an epsilon of the breastmnist_28 linf track "
                            r"\(1/255, 2/255, 4/255, 8/255\)"), None),
    "reported_empty": (yaml_change(set_in("reported", value={})), r"`reported` .*must map each epsilon", None),
    # the threat model
    "sets_epsilons": (yaml_change(set_in("track", "epsilons", value=["16/255"])),
                      r"`track.epsilons` = \['16/255'\] would change the threat model", None),
    "defense_sets_eps": (yaml_change(set_in("defense", "params", "eps", value=0.1)),
                         r"`defense.params.eps` = 0.1 would change the threat model", None),
    "input_range": (yaml_change(set_in("defense", "declaration", "input_range", value=[0, 255])),
                    r"`defense.declaration.input_range` = \[0, 255\]: the threat model's input box is \[0, 1\]", None),
    "needs_labels": (yaml_change(set_in("defense", "declaration", "needs_labels", value=True)),
                     r"`defense.declaration.needs_labels` = true: a defense that needs labels at inference", None),
    # the weights
    "missing_checkpoint": (lambda folder: (folder / "model.safetensors").unlink(),
                           r"`weights` = 'model.safetensors': the checkpoint .* is missing", None),
    "weights_path": (yaml_change(set_in("weights", value="../model.safetensors")),
                     r"`weights` = '../model.safetensors' must be a file name in the submission folder", None),
    "weights_not_safetensors_name": (yaml_change(set_in("weights", value="model.pt")),
                                     r"`weights` = 'model.pt' is not a .safetensors file", None),
    "not_safetensors": (replace_weights(b"GIF89a this is not a checkpoint at all" * 4),
                        r"is not a safetensors file .*Convert it with safetensors", None),
    "torch_save_zip": (torch_saved, r"is a torch.save zip archive, not safetensors; medbench never unpickles", None),
    "plain_pickle": (replace_weights(pickle.dumps({"w": [1.0, 2.0]}, protocol=4)),
                     r"is a Python pickle, not safetensors", None),
    "wrong_shapes": (weights_change(truncate_fc),
                     (r"tensor 'backbone.fc.weight' has shape \[1, \d+\] in the file but the architecture "
                      r"expects \[2, \d+\]"), None),
    "wrong_arch": (yaml_change(set_in("model", "arch", value="resnet10t")),
                   (r"tensor 'backbone.conv1.0.weight' has shape \[16, 1, 3, 3\] in the file but the "
                    r"architecture expects \[24, 1, 3, 3\]"), None),
    # behaviour on real test images
    "nan_outputs": (weights_change(nan_weights), r"`weights` give NaN or infinite outputs for 8 of 8 test images", None),
    "wrong_output_shape": (yaml_change(set_in("model", "recipe", value="one_logit_test")),
                           r"`model` returns outputs of shape \(8, 1\) for 8 images; .*\(8, 2\)",
                           lambda mp: mp.setitem(__import__("bench.models").models.RECIPES, "one_logit_test",
                                                 one_logit_recipe)),
    "nondeterministic": (yaml_change(lambda d: d["defense"].update(name="noisy_test", params={},
                                                                   declaration={"randomised": False,
                                                                                "differentiable": True})),
                         r"`defense.declaration.randomised` = false, but two calls on the same 8 images differ",
                         register_noisy_defense),
}


def forbid_evaluation(monkeypatch) -> None:
    """Any evaluation compute fails the test: rejections must come first."""
    import bench.experiment

    def boom(*_, **__):
        raise AssertionError("run_experiment was called for a rejected submission")

    monkeypatch.setattr(bench.experiment, "run_experiment", boom)


@pytest.mark.parametrize("case", list(BAD))
def test_bad_submission_rejected_and_nothing_written(case, submission, tmp_path, real_root, monkeypatch):
    mutate, message, setup = BAD[case]
    if setup is not None:
        setup(monkeypatch)
    mutate(submission)
    forbid_evaluation(monkeypatch)
    before = snapshot(tmp_path)
    with pytest.raises(SubmissionError, match=message) as info:
        evaluate_submission(submission, paths(tmp_path))
    assert "rejected, nothing run or written" in str(info.value)
    assert snapshot(tmp_path) == before, "a rejected submission wrote something"
    assert not (tmp_path / "out").exists() and not (tmp_path / "zoo").exists()


@pytest.mark.parametrize("override, fragment", [
    ("defense.params.quality=10", "defense.params.quality=10' is not allowed"),
    ("dataset=pneumoniamnist", "dataset=pneumoniamnist' is not allowed"),
    ("seed=3", "'seed=3' is not allowed"),
    ("battery=quick", "'battery=quick' is not allowed"),
    ("device", "is not key=value"),
])
def test_overrides_cannot_change_the_declaration(override, fragment, submission, tmp_path, monkeypatch):
    forbid_evaluation(monkeypatch)
    with pytest.raises(SubmissionError, match=fragment.replace(".", r"\.")):
        evaluate_submission(submission, [*paths(tmp_path), override])
    assert not (tmp_path / "out").exists()


def reduce_payload(marker: Path):
    class CreatesFile:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # unpickling this opens (creates) the marker file

    return CreatesFile()


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_pickle_named_safetensors_is_never_unpickled(protocol, submission, tmp_path, real_root, monkeypatch):
    # the payload works: unpickling it elsewhere does create its file
    proof = tmp_path / "proof" / "created"
    proof.parent.mkdir()
    pickle.loads(pickle.dumps(reduce_payload(proof), protocol=protocol)).close()
    assert proof.exists()
    # the same payload as a submission's weights: rejected by its first bytes, and the file is never created
    marker = tmp_path / "marker" / "created_by_unpickling"
    marker.parent.mkdir()
    (submission / "model.safetensors").write_bytes(pickle.dumps(reduce_payload(marker), protocol=protocol))
    forbid_evaluation(monkeypatch)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    before = snapshot(tmp_path)
    with pytest.raises(SubmissionError, match=r"Python pickle|not a safetensors file"):
        evaluate_submission(submission, paths(tmp_path))
    assert not marker.exists(), "the pickle was unpickled"
    assert snapshot(tmp_path) == before


def test_cli_rejects_with_message_and_writes_nothing(submission, tmp_path, real_root):
    marker = tmp_path / "created_by_unpickling"
    (submission / "model.safetensors").write_bytes(pickle.dumps(reduce_payload(marker)))
    before = snapshot(tmp_path)
    env = {**os.environ, "MEDMNIST_ROOT": str(real_root)}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "submit.py"), f"submission={submission}",
                           *paths(tmp_path)], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode != 0
    assert "error: rejected, nothing run or written" in proc.stderr and "is a Python pickle" in proc.stderr
    assert not marker.exists() and snapshot(tmp_path) == before


def test_example_submission_accepted_and_evaluated(tmp_path, real_root):
    """The example in the repo, with a tiny budget: a row with the measured and the reported number, the adaptive
    attacks its declaration selects, flags and `unreliable`; the same folder gives the same rows."""
    from bench.leaderboard import read_rows, track_path

    example_before = snapshot(EXAMPLE)
    reported = yaml.safe_load((EXAMPLE / "submission.yaml").read_text())["reported"]
    runs = []
    for attempt in ("a", "b"):  # two independent evaluations (separate output roots: no records reused)
        rows, folder = evaluate_submission(EXAMPLE, [*paths(tmp_path / attempt), *TINY])
        runs.append(rows)
        assert folder.parent == tmp_path / attempt / "out" / "submissions"
        assert json.loads((folder / "summary.json").read_text()) == json.loads(json.dumps(rows).replace("NaN", "null"))
    rows = runs[0]
    assert snapshot(EXAMPLE) == example_before, "evaluating a submission changed its folder"
    battery = [r for r in rows if r["kind"] == "battery"]
    assert [r["eps_label"] for r in battery] == ["1/255", "2/255", "4/255", "8/255"]
    for r in battery:
        assert r["reported_robust_acc"] == pytest.approx(reported[r["eps_label"]])
        assert 0 <= r["robust_acc"] <= r["clean_acc"] <= 1 and r["n"] == 8
    assert {r["model"] for r in rows} == {"jpeg_test_resnet_example_seed0"}
    assert {r["defense"] for r in rows} == {"jpeg(quality=75)"}
    assert {r["adaptive"] for r in rows} == {"bpda_apgd_ce;transfer_backbone"}
    assert {"apgd_ce", "apgd_margin", "fmn_linf", "square_linf", "bpda_apgd_ce", "transfer_backbone"} <= \
        {r["attack"] for r in rows}
    assert all(isinstance(r["unreliable"], bool) and "flags" in r for r in rows)
    # the local leaderboard holds the rows with the reported number beside the measured one
    stored = read_rows(track_path(tmp_path / "a" / "out" / "leaderboard", "breastmnist", 28, "linf"))
    stored_battery = [r for r in stored if r["kind"] == "battery"]
    assert len(stored_battery) == 4
    for r in stored_battery:
        assert float(r["reported_robust_acc"]) == pytest.approx(reported[r["eps_label"]], abs=1e-4)
        assert r["unreliable"] in ("true", "false")
    # the same folder always gives the same numbers
    measured = [[(r["attack"], r["eps_label"], r["robust_acc"], r["clean_acc"], r["flags"], r["unreliable"],
                  r["config_hash"], r["weights_sha256"]) for r in run] for run in runs]
    assert measured[0] == measured[1]


def test_example_yaml_is_the_documented_schema():
    """SUBMITTING.md documents every field of the schema and the example's command."""
    guide = (REPO / "results" / "SUBMITTING.md").read_text()
    for field, _ in schema_fields():
        assert f"`{field}`" in guide, f"results/SUBMITTING.md does not document {field}"
    assert "python scripts/submit.py submission=examples/submission" in guide
    from bench.checks import CHECKS

    for name in CHECKS:
        assert f"`{name}`" in guide, f"results/SUBMITTING.md does not list the check {name}"
