"""Defenses wrap classifiers and declare what they are; the declaration picks the adaptive attacks and checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from bench.config import CONF_DIR, compose
from bench.data import load_split
from bench.defenses import DEFENSES, Declaration, Defense, DefenseSpec, EoT, build_defense, declaration_of
from bench.defenses.adaptive import ADAPTIVE, adaptive_attacks, gradient_view
from bench.defenses.input_transforms import BitDepth
from bench.errors import ConfigError


class TinyNet(nn.Module):
    """A two-layer classifier for 1x28x28 inputs: fast enough for registry-wide checks."""

    def __init__(self, classes: int = 2):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 16), nn.ReLU(), nn.Linear(16, classes))

    def forward(self, x):
        return self.net(x)


def _robust_share(model, view, x, y, task, eps):
    from bench.attacks import build_attack

    attack = build_attack("pgd", "linf", 0, {"steps": 20, "rel_stepsize": 0.1, "random_start": False})
    (out,) = attack(view, x, y, [eps], task)
    with torch.no_grad():
        return float(task.correct(model(out.x_adv), y).float().mean())


@pytest.mark.parametrize("name", DEFENSES.names())
def test_every_registered_defense_has_a_config_and_keeps_the_classifier_contract(name):
    cfg = compose([f"defense={name}"])
    assert cfg.defense.name == name and (CONF_DIR / "defense" / f"{name}.yaml").exists()
    model = build_defense(DefenseSpec(name, dict(cfg.defense.params)), TinyNet()).eval()
    x = torch.rand(5, 1, 28, 28)
    out = model(x)
    assert out.shape == (5, 2) and torch.isfinite(out).all()
    declaration = declaration_of(model)
    assert declaration.input_range == (0.0, 1.0) and not declaration.needs_labels
    # a randomised declaration is honest about it, a deterministic one too (probed through the gradient
    # view: a majority vote over many draws of an untrained net can be stable by chance)
    probe = model.gradient_view() if isinstance(model, Defense) else model
    with torch.no_grad():
        same = torch.allclose(probe(x), probe(x))
    assert same != declaration.randomised


def test_unknown_defense_and_parameters_are_refused_with_the_choices():
    with pytest.raises(ConfigError, match="valid choices: .*bit_depth.*jpeg"):
        build_defense(DefenseSpec("jpg"), TinyNet())
    with pytest.raises(ConfigError, match="unknown parameter.*quality"):
        build_defense(DefenseSpec("bit_depth", {"quality": 3}), TinyNet())
    with pytest.raises(ConfigError, match="quality must be in 1..100"):
        build_defense(DefenseSpec("jpeg", {"quality": 0}), TinyNet())


def test_the_declaration_picks_the_adaptive_attacks():
    assert adaptive_attacks(Declaration()) == []  # an undefended model: the standard battery only
    assert adaptive_attacks(DEFENSES["jpeg"].declaration) == ["bpda_apgd_ce", "transfer_backbone"]
    assert adaptive_attacks(DEFENSES["median"].declaration) == ["bpda_apgd_ce", "transfer_backbone"]
    assert adaptive_attacks(DEFENSES["pgd_at"].declaration) == ["transfer_backbone"]
    assert "eot_apgd_ce" in adaptive_attacks(DEFENSES["smoothing"].declaration)  # randomised: EoT
    assert "eot_apgd_ce" not in adaptive_attacks(DEFENSES["bit_depth"].declaration)  # deterministic: none
    assert set(ADAPTIVE.names()) == {"bpda_apgd_ce", "eot_apgd_ce", "transfer_backbone"}
    assert DEFENSES["bit_depth"].declaration.gradient == "straight_through"  # non-differentiable: BPDA by default
    assert DEFENSES["jpeg"].declaration.gradient == "surrogate"  # BPDA through a differentiable JPEG


def test_the_jpeg_surrogate_is_the_codec_to_a_fraction_of_a_grey_level(real_root):
    """BPDA's backward pass for JPEG is a differentiable JPEG: on real images it decodes to what Pillow's libjpeg
    decodes: in grey within about half a grey level on average, in colour (4:2:0 chroma) within three, and at
    most half the identity's error at every quality (at quality 10 in colour the identity is off by 22 levels)."""
    from bench.defenses.differentiable_jpeg import differentiable_jpeg

    grey = load_split("breastmnist", "test", 28, real_root).images[:32]
    colour = nn.functional.interpolate(torch.rand(8, 3, 7, 7, generator=torch.Generator().manual_seed(0)), size=28,
                                       mode="bilinear", align_corners=False)
    for x, bound in ((grey, 1.2), (colour, 3.0)):
        for quality in (10, 75, 95):
            codec = build_defense(DefenseSpec("jpeg", {"quality": quality}), TinyNet())  # transform only
            real = codec.transform(x)
            error = float((differentiable_jpeg(x, quality) - real).abs().mean() * 255)
            identity_error = float((x - real).abs().mean() * 255)
            assert error < bound and error < identity_error / 2, (x.shape[1], quality, error, identity_error)


def test_bpda_differentiates_the_declared_surrogate_and_a_missing_one_is_refused():
    from bench.defenses import register_defense
    from bench.defenses.differentiable_jpeg import differentiable_jpeg

    torch.manual_seed(0)
    net = TinyNet()
    jpeg = build_defense(DefenseSpec("jpeg"), net).eval()
    x = torch.rand(4, 1, 28, 28)

    def input_gradient(f):
        xg = x.clone().requires_grad_(True)
        f(xg).logsumexp(1).sum().backward()
        return xg.grad

    bpda = input_gradient(gradient_view(jpeg))
    with torch.no_grad():
        torch.testing.assert_close(gradient_view(jpeg)(x), jpeg(x))  # the forward pass is the real codec
    # the gradient is the surrogate's, taken at the codec's output: d classify(t)/dt through d surrogate(x)/dx
    xs = x.clone().requires_grad_(True)
    g = differentiable_jpeg(xs, 75)
    (net(g + (jpeg.transform(x) - g).detach()).logsumexp(1).sum()).backward()
    torch.testing.assert_close(bpda, xs.grad)
    assert not torch.allclose(bpda, input_gradient(jpeg.view(straight_through=True, declaration=BitDepth.declaration)))
    with pytest.raises(TypeError, match="implements? no surrogate|does not implement surrogate"):
        @register_defense("surrogate_missing")
        class NoSurrogate(Defense):
            declaration = Declaration(differentiable=False, gradient="surrogate", transforms_input=True)
    assert "surrogate_missing" not in DEFENSES.names()


def test_eot_averages_the_gradients_of_its_draws():
    torch.manual_seed(0)
    smoothing = build_defense(DefenseSpec("smoothing", {"sigma": 0.25}), TinyNet()).eval()
    view = gradient_view(smoothing)
    assert isinstance(view, EoT) and view.samples == 20
    x = torch.rand(3, 1, 28, 28, requires_grad=True)
    (grad,) = torch.autograd.grad(view(x).logsumexp(1).sum(), x)
    assert grad.abs().sum() > 0  # the soft smoothed classifier has a gradient; the vote does not
    x2 = x.detach().clone().requires_grad_(True)
    (vote_grad,) = torch.autograd.grad(smoothing(x2).logsumexp(1).sum(), x2)
    assert vote_grad.abs().sum() == 0
    fixed = smoothing.view(fixed_seed=3).gradient_view()
    with torch.no_grad():
        assert torch.equal(fixed(x.detach()), fixed(x.detach()))  # randomness fixed: a deterministic function


def test_an_input_transform_is_broken_by_bpda_more_than_by_plain_pgd(trained_breast, real_root):
    model, card, _ = trained_breast
    split = load_split("breastmnist", "test", 28, real_root)
    x, y = split.images[:96], split.labels[:96]
    task = split.info.task
    defended = build_defense(DefenseSpec("bit_depth", {"bits": 4}), model).eval()
    plain = _robust_share(defended, defended, x, y, task, 4 / 255)
    bpda = _robust_share(defended, gradient_view(defended), x, y, task, 4 / 255)
    assert bpda < plain - 0.1, (plain, bpda)  # plain PGD sees a zero gradient: the transform only looks robust


def test_a_quantising_front_end_declared_differentiable_is_caught(trained_breast, real_root):
    from bench.checks import attach_flags, run_model_checks

    class MislabelledBitDepth(BitDepth):
        declaration = Declaration(differentiable=True, transforms_input=True)  # a lie: rounding has no gradient

    model, _, _ = trained_breast
    split = load_split("breastmnist", "test", 28, real_root)
    liar = MislabelledBitDepth(model).eval()
    assert adaptive_attacks(liar.declaration) == ["bpda_apgd_ce", "transfer_backbone"]  # BPDA still runs
    # the gradient checks probe the view the declaration gives attacks: here the rounding itself, gradient zero
    fired = run_model_checks(liar, split.images[:32], split.labels[:32], split.info.task)
    assert {"zero_grad", "unbounded_eps_not_zero"} <= set(fired), fired
    rows = attach_flags([{"attack": "a", "norm": "linf", "eps": 0.1, "robust_acc": 0.5, "kind": "gradient"}], list(fired))
    assert rows[0]["unreliable"] is True


def test_randomised_defenses_run_eagerly_and_say_why(trained_breast):
    from bench.model_forms import attack_model

    model, _, _ = trained_breast
    smoothing = build_defense(DefenseSpec("smoothing", {"sigma": 0.12, "n_predict": 4}), model).eval()
    form = attack_model(smoothing, "auto", "cpu", torch.rand(4, 1, 28, 28))
    assert form.form == "torch_eager" and "randomised" in form.note


def test_a_deterministic_transform_runs_in_front_of_its_classifiers_checked_form(trained_breast):
    """JPEG or bit depth cannot be checked through autograd, but the classifier behind them can: it gets a fast
    form, checked on transformed inputs, and BPDA's straight-through gradient still reaches the input through it."""
    from bench.model_forms import attack_model, running_form

    model, _, _ = trained_breast
    bits = build_defense(DefenseSpec("bit_depth"), model).eval()
    x = torch.rand(8, 1, 28, 28)
    form = attack_model(bits, "torch_bn_folded", "cpu", x)
    assert form.form == "torch_bn_folded" and "classifier" in form.note and form.gap <= 1
    assert isinstance(form.module, Defense) and running_form(form.module, form.form) == "torch_bn_folded"
    with torch.no_grad():
        torch.testing.assert_close(form.module(x), bits(x), atol=2e-3, rtol=2e-3)

    def input_gradient(view):
        xg = x.clone().requires_grad_(True)
        view(xg).logsumexp(1).sum().backward()
        return xg.grad

    assert input_gradient(form.module).abs().sum() == 0  # the plain view: what a naive attack sees
    torch.testing.assert_close(input_gradient(gradient_view(form.module)), input_gradient(gradient_view(bits)),
                               atol=1e-4, rtol=1e-3)  # BPDA through the form = BPDA through eager
    chosen = attack_model(bits, "auto", "cpu", x, planned_passes=100)  # too short a run to compile
    assert isinstance(chosen.module, Defense) and "classifier" in chosen.note and "auto:" in chosen.note


def test_a_trained_defense_refuses_weights_not_trained_that_way(trained_breast):
    from bench.experiment import check_trained_as_declared

    model, card, _ = trained_breast
    with pytest.raises(ConfigError, match="declares weights trained with 'pgd_at'.*trained with 'none'.*defense=pgd_at"):
        check_trained_as_declared(build_defense(DefenseSpec("pgd_at"), model), card)
    check_trained_as_declared(build_defense(DefenseSpec("jpeg"), model), card)  # transforms need no training


def test_undefended_runs_keep_their_config_hash():
    from bench.config import config_hash

    def hashed(*overrides: str) -> str:
        return config_hash(compose([*overrides, "paths.output_dir=out"]))  # no Hydra run folder outside a run

    assert hashed("defense=none") == hashed()
    assert hashed("defense=jpeg") != hashed("defense=jpeg", "defense.params.quality=50")
    # how a trained defense's weights were made is in the weights' hash, not the evaluation's config
    assert hashed("defense=pgd_at") == hashed("defense=pgd_at", "defense.train.steps=3")


# ------------------------------------------------------------------------------------------------
# evaluation checks: what sets `unreliable`
# ------------------------------------------------------------------------------------------------
def _frame(records):
    import pandas as pd

    base = {"norm": "linf", "clean_correct": True, "attacked": True}
    return pd.DataFrame([{**base, **r} for r in records])


def _probe(frame, model=None, backbone=None, n=4):
    from bench.checks import EvaluationProbe
    from bench.tasks import TASKS

    images = torch.rand(n, 1, 28, 28)
    return EvaluationProbe(model or TinyNet(), backbone, frame, images, torch.zeros(n, 1, dtype=torch.long),
                           TASKS["binary-class"], "linf", [2 / 255], 10, 0)


def test_a_sample_only_a_black_box_attack_breaks_marks_the_evaluation_unreliable():
    from bench.checks import CHECKS

    check = CHECKS["black_box_beats_white_box_per_sample"].fn
    eps = 2 / 255
    white_first = _frame([
        {"index": 0, "eps": eps, "attack": "apgd_ce", "kind": "gradient", "success": True},
        {"index": 0, "eps": eps, "attack": "square_linf", "kind": "score", "success": True},
        {"index": 1, "eps": eps, "attack": "apgd_ce", "kind": "gradient", "success": False},
    ])
    assert check(_probe(white_first)) is None  # square only confirmed what APGD found
    missed = _frame([
        {"index": 1, "eps": eps, "attack": "apgd_ce", "kind": "gradient", "success": False},
        {"index": 1, "eps": eps, "attack": "transfer_backbone", "kind": "transfer", "success": True},
    ])
    assert "transfer_backbone" in check(_probe(missed))
    assert CHECKS["black_box_beats_white_box_per_sample"].unreliable


def test_a_masked_model_fails_the_breakability_and_noise_checks():
    from bench.checks import CHECKS

    class Masked(nn.Module):
        """Right for every input, gradient zero: what no attack can break, and what the checks must not trust."""

        def forward(self, x):
            return torch.stack([x.flatten(1).sum(1) * 0 + 5, x.flatten(1).sum(1) * 0], 1)

    frame = _frame([{"index": i, "eps": 2 / 255, "attack": "apgd_ce", "kind": "gradient", "success": False}
                    for i in range(4)])
    probe = _probe(frame, model=Masked())
    assert "undefended backbone" in CHECKS["backbone_not_breakable"].fn(probe)
    assert CHECKS["random_noise_breaks"].fn(probe) is None  # noise cannot break a constant either ...
    assert CHECKS["more_iterations_help"].fn(probe) is None  # ... nor more iterations: the backbone check catches it

    class NoiseBreaks(nn.Module):
        """Correct on the clean image, wrong as soon as a pixel moves: random noise finds it, a zero gradient does not."""

        def __init__(self, images):
            super().__init__()
            self.images = images

        def forward(self, x):
            moved = (x.flatten(1)[:, None] - self.images.flatten(1)[None]).abs().amax(2).min(1).values > 1e-6
            return torch.stack([(~moved).float() * 5, moved.float() * 5], 1) + 0 * x.flatten(1)[:, :1]

    probe = _probe(frame)
    probe.model = NoiseBreaks(probe.images)
    assert "random noise misclassified 4 of 4" in CHECKS["random_noise_breaks"].fn(probe)


def test_unreliable_or_unchecked_evaluations_are_not_ranked(tmp_path):
    from conftest import evaluation_rows

    from bench.leaderboard.admission import admit, group_evaluations

    (good,) = group_evaluations(evaluation_rows())
    assert admit(good).ranked
    (flawed,) = group_evaluations(evaluation_rows(flags="random_noise_breaks", unreliable="true"))
    assert "unreliable: random_noise_breaks" in admit(flawed).reasons
    (old,) = group_evaluations(evaluation_rows(unreliable=""))
    assert any("evaluation checks were not recorded" in r for r in admit(old).reasons)


def test_an_older_leaderboard_file_is_upgraded_and_keeps_its_rows(tmp_path):
    import csv

    from conftest import board_row

    from bench.config import REPO_ROOT
    from bench.leaderboard import read_rows, upsert_rows
    from bench.leaderboard.schema import SCHEMA

    # the committed rows as schema version 2 wrote them: only the columns that existed then
    committed = REPO_ROOT / "results" / "leaderboard" / "breastmnist_28_linf.csv"
    version_2 = [c.name for c in SCHEMA if c.since <= 2]
    old = tmp_path / committed.name
    with open(old, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=version_2, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(read_rows(committed))
    header = old.read_text().splitlines()[0].split(",")
    assert "unreliable" not in header and "reported_robust_acc" not in header  # written by schema version 2
    before = read_rows(old)
    assert before and all(r["unreliable"] == "" and r["adaptive"] == "" for r in before)
    upsert_rows(old, [board_row(defense="jpeg(quality=75)", adaptive="bpda_apgd_ce;transfer_backbone",
                                reported_robust_acc=0.7, config_hash="new0")])
    after = read_rows(old)
    assert after[: len(before)] == before  # every old row kept as it was
    assert after[-1]["adaptive"] == "bpda_apgd_ce;transfer_backbone" and after[-1]["reported_robust_acc"] == "0.7"
    assert "unreliable" in old.read_text().splitlines()[0].split(",")


def test_any_module_is_evaluated_from_python_without_hydra(tmp_path, real_root):
    from bench.api import evaluate_model

    rows = evaluate_model(TinyNet(), dataset="breastmnist", battery="quick", epsilons=["2/255"], defense="bit_depth",
                          n_examples=8, name="my_net", output_dir=tmp_path, overrides=["eval.model_form=torch_eager"])
    battery = [r for r in rows if r["kind"] == "battery"]
    assert [r["eps_label"] for r in battery] == ["2/255"] and battery[0]["n"] == 8
    assert {r["model"] for r in rows} == {"my_net_seed0"} and {r["defense"] for r in rows} == {"bit_depth(bits=4)"}
    assert rows[0]["adaptive"] == "bpda_apgd_ce;transfer_backbone"
    assert {r["attack"] for r in rows} >= {"fgsm", "pgd_linf", "bpda_apgd_ce", "transfer_backbone"}
    assert (tmp_path / "leaderboard" / "breastmnist_28_linf.csv").exists()  # local rows, never results/


def test_the_bpda_validation_compares_every_gradient_a_transform_can_be_attacked_through():
    """scripts/validate_bpda.py attacks JPEG through autograd, the identity and its surrogate, bit depth (which has
    no surrogate) through the first two; each view's forward is the real transform."""
    from scripts.validate_bpda import views

    x = torch.rand(2, 1, 28, 28)
    for name, expected in (("jpeg", ["none (autograd)", "straight_through", "surrogate"]),
                           ("bit_depth", ["none (autograd)", "straight_through"])):
        defense = build_defense(DefenseSpec(name), TinyNet()).eval()
        found = views(defense)
        assert list(found) == expected
        with torch.no_grad():
            for view in found.values():
                torch.testing.assert_close(view(x), defense(x))
