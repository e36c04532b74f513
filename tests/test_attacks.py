"""The attack engine: every registered attack (with its conf/attack defaults) obeys its threat model.

Parametrised over the YAML files in conf/attack, so a new attack config is
tested without new test code.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from bench.attacks import ATTACKS, build_attack, check_threat_model
from bench.config import CONF_DIR, parse_eps
from bench.data import load_split
from bench.errors import ConfigError, ThreatModelViolation
from bench.models import ModelSpec, build_model
from bench.tasks import get_task

ATTACK_CONFIGS = sorted(p.stem for p in (CONF_DIR / "attack").glob("*.yaml"))

# Smaller budgets for tests (the YAML holds the real defaults); keyed by registry name.
TEST_BUDGETS = {
    "pgd": {"steps": 10},
    "apgd": {"steps": 10},
    "square": {"max_queries": 100},
    "decision": {"max_queries": 300},
    "patch": {"train_steps": 15, "train_samples": 128},
    "fmn": {"steps": 20},
    "cw": {"steps": 20, "binary_search_steps": 3},
    "deepfool": {"steps": 20},
    "transfer": {"steps": 5},
}
# Config-specific test budgets.
TEST_BUDGETS_BY_CONFIG: dict[str, dict] = {}


# Determinism needs no budget to speak of: a few iterations show whether a seed fixes the result.
DETERMINISM_BUDGET = {"steps": 3, "max_queries": 40, "train_steps": 3, "binary_search_steps": 2}


def attack_from_config(stem: str, seed: int = 0, context=None, budget: dict | None = None):
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "attack" / f"{stem}.yaml"))
    budget = {**TEST_BUDGETS.get(cfg["name"], {}), **TEST_BUDGETS_BY_CONFIG.get(stem, {}), **(budget or {})}
    params = {**(cfg.get("params") or {}), **{k: v for k, v in budget.items() if k in ATTACKS[cfg["name"]].param_names()}}
    attack = build_attack(cfg["name"], cfg["norm"], seed, params)
    if context is not None:
        attack.prepare(context)
    return attack, [parse_eps(e) for e in cfg["epsilons"]]


@pytest.fixture(scope="module")
def context(real_root, trained_breast, tmp_path_factory):
    """What the experiment runner hands to attacks: dataset, zoo (for surrogates), train config."""
    from bench.attacks.base import AttackContext
    from bench.data import dataset_info
    from bench.train import TrainConfig

    return AttackContext(dataset_info("breastmnist"), str(real_root), str(tmp_path_factory.mktemp("zoo")),
                         TrainConfig(epochs=4, seed=0), "cpu", trained_breast[1])


def assert_inside_threat_model(x, x_adv, eps, norm):
    """Independent of the engine's own check: the ball (or patch square) and the [0, 1] box."""
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    delta = (x_adv - x).flatten(1)
    if norm == "patch":
        side = max(1, round(eps * x.shape[-1]))
        for changed in (x_adv != x).any(1):
            where = changed.nonzero()
            if len(where):
                assert int((where.amax(0) - where.amin(0) + 1).max()) <= side
        return
    bound = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert float(bound.max()) <= eps * (1 + 1e-5) + 1e-6


@pytest.fixture(scope="module")
def breast_batch(real_root):
    test = load_split("breastmnist", "test", root=real_root, n_examples=48, seed=0)
    return test.images, test.labels, test.info.task


def test_every_registered_attack_has_a_config():
    names = {OmegaConf.load(CONF_DIR / "attack" / f"{s}.yaml").name for s in ATTACK_CONFIGS}
    assert set(ATTACKS) <= names


@pytest.mark.parametrize("stem", ATTACK_CONFIGS)
def test_attack_stays_in_ball_and_box_and_lowers_accuracy(stem, trained_breast, breast_batch, context):
    model, _, _ = trained_breast
    x, y, task = breast_batch
    with torch.no_grad():
        clean = task.correct(model(x), y)
    x, y = x[clean], y[clean]
    attack, epsilons = attack_from_config(stem, context=context)
    outputs = attack(model, x, y, epsilons, task)
    assert [o.eps for o in outputs] == epsilons
    for out in outputs:
        assert_inside_threat_model(x, out.x_adv, out.eps, attack.norm)
        if attack.max_queries is not None:
            assert out.queries is not None and int(out.queries.max()) <= attack.max_queries
    with torch.no_grad():
        robust_at_largest = float(task.correct(model(outputs[-1].x_adv), y).float().mean())
    assert robust_at_largest < 1.0, f"{stem} at eps {epsilons[-1]:.4f} broke none of the correct samples"


@pytest.mark.parametrize("stem", ATTACK_CONFIGS)
def test_same_seed_same_adversarial_examples(stem, trained_breast, breast_batch, context):
    model, _, _ = trained_breast
    x, y, task = breast_batch
    first_attack, epsilons = attack_from_config(stem, seed=3, context=context, budget=DETERMINISM_BUDGET)
    again_attack, _ = attack_from_config(stem, seed=3, context=context, budget=DETERMINISM_BUDGET)
    first = first_attack(model, x[:8], y[:8], epsilons[-1:], task)[0].x_adv
    again = again_attack(model, x[:8], y[:8], epsilons[-1:], task)[0].x_adv
    assert torch.equal(first, again)


def test_pgd_is_at_least_as_strong_as_fgsm(trained_breast, breast_batch):
    model, _, _ = trained_breast
    x, y, task = breast_batch
    eps = [parse_eps("2/255")]
    with torch.no_grad():
        fgsm = task.correct(model(build_attack("fgsm")(model, x, y, eps, task)[0].x_adv), y).sum()
        pgd = task.correct(model(build_attack("pgd", params={"steps": 20})(model, x, y, eps, task)[0].x_adv), y).sum()
    assert pgd <= fgsm


def test_pgd_keeps_the_best_example_not_the_last():
    """A model that is fooled only near the start: the last iterate is clean, the kept one is not."""

    class FooledOnlyNearX(torch.nn.Module):
        def forward(self, x):
            dist = (x - 0.5).abs().flatten(1).amax(1)
            wrong = (dist > 0).float() * (dist < 0.02).float()
            logit = torch.stack([1 - wrong, wrong], 1) * 10 + (x.flatten(1).sum(1, keepdim=True) * 0)
            return logit + x.flatten(1)[:, :2] * 1e-3

    x = torch.full((4, 1, 4, 4), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    task = get_task("binary-class")
    attack = build_attack("pgd", params={"steps": 5, "random_start": True, "abs_stepsize": 0.1})
    x_adv = attack(FooledOnlyNearX(), x, y, [0.01], task)[0].x_adv
    assert (FooledOnlyNearX()(x_adv).argmax(1) == 1).all()


@pytest.mark.parametrize("flag", ["dermamnist", "chestmnist", "retinamnist"])
def test_pgd_on_rgb_multiclass_and_multilabel_paths(synthetic, flag):
    data = load_split(flag, "test", root=synthetic, n_examples=8)
    model = build_model(ModelSpec("m", "resnet18", "native"), data.info.n_channels, data.info.num_classes).eval()
    attack = build_attack("pgd", "l2", params={"steps": 3})
    out = attack(model, data.images, data.labels, [0.5], data.info.task)[0]
    assert float((out.x_adv - data.images).flatten(1).norm(dim=1).max()) <= 0.5 + 1e-5


def test_threat_model_violation_is_an_error_not_a_clip():
    x = torch.rand(2, 1, 4, 4) * 0.5
    with pytest.raises(ThreatModelViolation, match="linf norm"):
        check_threat_model(x, x + 0.1, 0.05, "linf", "bad")
    with pytest.raises(ThreatModelViolation, match=r"leave \[0, 1\]"):
        check_threat_model(x, x - 1.0, 2.0, "linf", "bad")


@pytest.mark.parametrize("eps, match", [(-0.1, "negative"), (8.0, "above 1")])
def test_bad_epsilons_are_refused(eps, match):
    x, y = torch.rand(2, 1, 28, 28), torch.zeros(2, dtype=torch.long)
    model = build_model(ModelSpec("m", "resnet18", "native"), 1, 2)
    with pytest.raises(ConfigError, match=match):
        build_attack("pgd")(model, x, y, [eps], get_task("binary-class"))


def test_unsupported_norm_and_unknown_names():
    with pytest.raises(ConfigError, match="supports: linf"):
        build_attack("fgsm", "l2")
    with pytest.raises(ConfigError, match="valid choices: .*fgsm.*pgd"):
        build_attack("pgdd")
    with pytest.raises(ConfigError, match="unknown parameter"):
        build_attack("pgd", params={"stepz": 3})


def test_string_epsilons():
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    with pytest.raises(ConfigError, match="8/255"):
        parse_eps("eight")


@pytest.mark.parametrize("stem", ATTACK_CONFIGS)
def test_targeted_variant_reaches_the_opposite_class(stem, trained_breast, breast_batch, context):
    """Every attack that has a targeted variant sends some samples to the target (Finlayson et al.'s goal)."""
    cfg = OmegaConf.load(CONF_DIR / "attack" / f"{stem}.yaml")
    if not ATTACKS[cfg.name].supports_targeted:
        with pytest.raises(ConfigError, match="no targeted variant"):
            build_attack(cfg.name, cfg.norm, 0, {**OmegaConf.to_container(cfg.params), "target": "opposite"})
        return
    model, _, _ = trained_breast
    x, y, task = breast_batch
    attack, epsilons = attack_from_config(stem, context=None)
    attack = build_attack(cfg.name, cfg.norm, 0, {**attack.params, "target": "opposite"})
    attack.prepare(context)
    outputs = attack(model, x[:24], y[:24], epsilons[-1:], task)
    target = 1 - y[:24]
    with torch.no_grad():
        reached = model(outputs[0].x_adv).argmax(1) == target
    assert attack.last_criterion.targeted and torch.equal(attack.last_criterion.target, target)
    assert reached.any(), f"{stem} sent no sample to its target class"


def test_targeted_attack_without_a_rule_is_refused():
    with pytest.raises(ConfigError, match="no target rule"):
        build_attack("pgd", params={"targeted": True})


@pytest.mark.parametrize("flag", ["dermamnist", "chestmnist"])
@pytest.mark.parametrize("stem", ATTACK_CONFIGS)
def test_every_attack_on_rgb_multiclass_and_multilabel(synthetic, flag, stem, tmp_path):
    """RGB 7-class and 14-label synthetic data: inside the threat model, or a clear refusal."""
    from bench.attacks.base import AttackContext
    from bench.train import TrainConfig

    data = load_split(flag, "test", root=synthetic, n_examples=6)
    info = data.info
    model = build_model(ModelSpec("m", "resnet18", "native"), info.n_channels, info.num_classes).eval()
    context = AttackContext(info, str(synthetic), str(tmp_path), TrainConfig(epochs=1, seed=0), "cpu", None)
    attack, epsilons = attack_from_config(stem)
    if attack.targeted:  # 'opposite' is for binary tasks; these take a class or a label to flip
        rule = "flip:0" if info.task.multi_label else "next"
        attack = build_attack(attack.name, attack.norm, 0, {**attack.params, "target": rule})
    try:
        attack.prepare(context)
        outputs = attack(model, data.images, data.labels, epsilons[-1:], info.task)
    except ConfigError as err:  # foolbox-based attacks assume one label per image
        assert info.task.multi_label and "multi-label" in str(err)
        return
    assert_inside_threat_model(data.images, outputs[0].x_adv, epsilons[-1], attack.norm)


def test_surrogate_that_does_not_fit_the_target_is_refused(trained_breast, synthetic, tmp_path):
    from bench.attacks.base import AttackContext
    from bench.data import dataset_info
    from bench.errors import CheckpointError
    from bench.train import TrainConfig

    _, _, weights = trained_breast  # greyscale, 2 classes
    attack = build_attack("transfer", "linf", 0, {"surrogate_checkpoint": str(weights)})
    context = AttackContext(dataset_info("dermamnist"), str(synthetic), str(tmp_path), TrainConfig(epochs=1), "cpu", None)
    with pytest.raises(CheckpointError, match=r"surrogate .* 2 classes.*dermamnist_28 has 3x28x28 with 7"):
        attack.prepare(context)


def test_query_budget_must_be_positive():
    for name in ("square", "decision"):
        with pytest.raises(ConfigError, match="max_queries"):
            build_attack(name, "l2", 0, {"max_queries": 0})
