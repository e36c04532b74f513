"""Minimum-norm attacks (FMN, C&W L2, DeepFool): one pass, the minimal example reused at every epsilon.

Budgets here are cut down so the file runs in seconds; the conf/attack
defaults are exercised by tests/test_attacks.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from bench.attacks import build_attack
from bench.attacks.criteria import Criterion
from bench.attacks.threat import flat_norm
from bench.data import load_split
from bench.errors import ConfigError
from bench.models import ModelSpec, build_model
from bench.tasks import get_task

L2_EPS = [0.05, 0.1, 0.25, 0.5, 1.0]
LINF_EPS = [1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255]
FAST = {
    "fmn": {"steps": 20},
    "cw": {"steps": 20, "binary_search_steps": 4, "initial_const": 0.1, "lr": 0.05},
    "deepfool": {"steps": 20},
}
CASES = [("fmn", "l2"), ("fmn", "linf"), ("cw", "l2"), ("deepfool", "l2"), ("deepfool", "linf")]


def eps_for(norm: str) -> list[float]:
    return L2_EPS if norm == "l2" else LINF_EPS


@pytest.fixture(scope="module")
def correct_batch(trained_breast, real_root):
    """Up to 32 real BreastMNIST test images the trained model classifies correctly."""
    model, _, _ = trained_breast
    test = load_split("breastmnist", "test", root=real_root, n_examples=48, seed=1)
    with torch.no_grad():
        keep = test.info.task.correct(model(test.images), test.labels)
    return test.images[keep][:32], test.labels[keep][:32], test.info.task


def fooled(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, task) -> torch.Tensor:
    with torch.no_grad():
        return ~task.correct(model(x_adv), y)


@pytest.fixture(scope="module")
def attacked(trained_breast, correct_batch):
    """Each (attack, norm) run once on the batch, shared by the tests that only read its outputs."""
    model, _, _ = trained_breast
    x, y, task = correct_batch
    cache: dict[tuple[str, str], tuple] = {}

    def run(name: str, norm: str):
        if (name, norm) not in cache:
            attack = build_attack(name, norm, params=FAST[name])
            cache[name, norm] = attack, attack(model, x, y, eps_for(norm), task)
        return cache[name, norm]

    return run


@pytest.mark.parametrize("name, norm", CASES)
def test_every_epsilon_is_in_the_ball_and_the_box_and_monotone(name, norm, trained_breast, correct_batch, attacked):
    """Per epsilon: inside [0, 1] and the ball; either the clean input or an adversarial one; fooled stays fooled."""
    model, _, _ = trained_breast
    x, y, task = correct_batch
    attack, outputs = attacked(name, norm)
    assert attack.kind == "minimum_norm"
    assert [o.eps for o in outputs] == eps_for(norm)
    previous = torch.zeros(len(x), dtype=torch.bool)
    for out in outputs:
        assert float(out.x_adv.min()) >= 0 and float(out.x_adv.max()) <= 1
        assert float(flat_norm(out.x_adv - x, norm).max()) <= out.eps * (1 + 1e-5) + 1e-6  # float32 rounding of x + delta
        now = fooled(model, out.x_adv, y, task)
        untouched = (out.x_adv == x).flatten(1).all(1)
        assert (now | untouched).all(), "a perturbed example must fool the model (else the clean input is returned)"
        assert (now >= previous).all(), "a sample fooled at a smaller epsilon must stay fooled at a larger one"
        # every minimal example that fits the ball fools; others may still fool once projected onto it
        assert (now >= (attack.last_norms <= out.eps)).all()
        previous = now
    assert len({o.seconds for o in outputs}) == 1, "the one pass's time is split equally over the epsilons"


@pytest.mark.parametrize("name, norm", CASES)
def test_fools_most_correct_samples_at_a_large_epsilon(name, norm, trained_breast, correct_batch, attacked):
    """Real BreastMNIST model: at L2 1.0 / L-inf 16/255 at least 80% of the correctly classified samples fall."""
    model, _, _ = trained_breast
    x, y, task = correct_batch
    _, outputs = attacked(name, norm)
    largest = outputs[-1]
    assert largest.eps == (1.0 if norm == "l2" else 16 / 255)
    rate = float(fooled(model, largest.x_adv, y, task).float().mean())
    assert rate >= 0.8, f"{name}-{norm} fooled only {rate:.2f} of {len(x)} samples at eps {largest.eps:.4f}"


@pytest.mark.parametrize("name, norm", CASES)
def test_same_seed_same_outputs(name, norm, trained_breast, correct_batch):
    model, _, _ = trained_breast
    x, y, task = correct_batch
    x, y = x[:12], y[:12]
    first = build_attack(name, norm, seed=5, params=FAST[name])(model, x, y, eps_for(norm), task)
    again = build_attack(name, norm, seed=5, params=FAST[name])(model, x, y, eps_for(norm), task)
    for a, b in zip(first, again):
        assert torch.equal(a.x_adv, b.x_adv)


@pytest.mark.parametrize("name, norm", [("fmn", "l2"), ("fmn", "linf"), ("cw", "l2")])
def test_targeted_attacks_reach_the_target(name, norm, trained_breast, correct_batch):
    """target="opposite": every perturbed example is classified as the target, and most samples get there."""
    model, _, _ = trained_breast
    x, y, task = correct_batch
    eps = 1.0 if norm == "l2" else 16 / 255
    attack = build_attack(name, norm, params={**FAST[name], "target": "opposite"})
    out = attack(model, x, y, [eps], task)[0]
    target = attack.last_criterion.target
    assert torch.equal(target, 1 - y)
    moved = ~(out.x_adv == x).flatten(1).all(1)
    with torch.no_grad():
        pred = model(out.x_adv).argmax(1)
    assert (pred[moved] == target[moved]).all()
    assert float(moved.float().mean()) >= 0.8


def test_deepfool_has_no_targeted_variant(trained_breast, correct_batch):
    with pytest.raises(ConfigError, match="no targeted variant"):
        build_attack("deepfool", "l2", params={"target": "opposite"})
    model, _, _ = trained_breast
    x, y, task = correct_batch
    targeted = Criterion(task, y[:4], 1 - y[:4])
    with pytest.raises(ConfigError, match="no targeted variant"):
        build_attack("deepfool", "l2")(model, x[:4], y[:4], [0.5], task, criterion=targeted)


class Linear(nn.Module):
    """A binary linear classifier: logits (0, w.x + b), so the exact minimal perturbation is known."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.w = nn.Parameter(w)
        self.b = b

    def forward(self, x):
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(score), score], 1)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_minimal_norm_on_a_linear_model_matches_the_exact_distance(norm):
    """Distance to w.x + b = 0 is |w.x + b| / ||w||_dual; attacks must land just past it, not far beyond."""
    torch.manual_seed(0)
    w = torch.randn(64)
    x = torch.full((6, 1, 8, 8), 0.5) + 0.05 * torch.randn(6, 1, 8, 8)
    scores = x.flatten(1) @ w
    b = -float(scores.mean())
    y = (scores + b > 0).long()
    model = Linear(w, b)
    dual = w.norm(p=2) if norm == "l2" else w.abs().sum()
    exact = (scores + b).abs() / dual
    assert float(exact.max()) < 0.2  # far from the [0, 1] box, so clipping plays no part
    task = get_task("binary-class")
    names = ["fmn", "deepfool"] + (["cw"] if norm == "l2" else [])
    for name in names:
        params = {"cw": {"steps": 200, "binary_search_steps": 9, "initial_const": 1.0, "lr": 0.01}}.get(name, {})
        attack = build_attack(name, norm, params=params)
        attack(model, x, y, [1.0 if norm == "l2" else 0.5], task)
        found = attack.last_norms
        assert torch.isfinite(found).all(), name
        assert (found >= exact * (1 - 1e-4)).all(), f"{name} beat the exact minimum: impossible"
        assert (found <= exact * 1.05 + 1e-3).all(), f"{name}: {found} vs exact {exact}"


def test_deepfool_handles_multi_label_tasks(synthetic):
    """Multi-label: each label is its own boundary; a fooled sample has at least one label flipped."""
    data = load_split("chestmnist", "test", root=synthetic, n_examples=6)
    model = build_model(ModelSpec("m", "resnet18", "native"), data.info.n_channels, data.info.num_classes).eval()
    attack = build_attack("deepfool", "l2", params={"steps": 10, "candidates": 4})
    out = attack(model, data.images, data.labels, [2.0], data.info.task)[0]
    with torch.no_grad():
        flipped = ~data.info.task.correct(model(out.x_adv), data.labels)
    assert torch.equal(flipped, attack.last_norms <= 2.0)
    assert flipped.any()


def test_bad_parameters_are_refused():
    with pytest.raises(ConfigError, match="supports: l2"):
        build_attack("cw", "linf")
    with pytest.raises(ConfigError, match="candidates >= 2"):
        build_attack("deepfool", "l2", params={"candidates": 1})
    with pytest.raises(ConfigError, match="gamma"):
        build_attack("fmn", "l2", params={"gamma_init": 1.5})
    with pytest.raises(ConfigError, match="unknown parameter"):
        build_attack("fmn", "l2", params={"stepz": 3})
