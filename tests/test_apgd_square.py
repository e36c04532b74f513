"""APGD (Croce & Hein, 2020) and the Square attack (Andriushchenko et al., 2020): what they promise.

Budgets here are small so the file runs in seconds; conf/attack holds the real
defaults (APGD 100 steps, Square 5000 queries).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from bench.attacks import build_attack
from bench.attacks.apgd import checkpoint_iterations
from bench.attacks.square import p_schedule
from bench.data import load_split
from bench.errors import ConfigError
from bench.tasks import get_task

EPS_LINF = 8 / 255


@pytest.fixture(scope="module")
def breast_batch(real_root):
    test = load_split("breastmnist", "test", root=real_root, n_examples=48, seed=0)
    return test.images, test.labels, test.info.task


def n_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task) -> int:
    with torch.no_grad():
        return int(task.correct(model(x), y).sum())


class Linear(nn.Module):
    """A fixed random linear classifier: cheap, any number of classes."""

    def __init__(self, n_in: int, n_classes: int, seed: int = 0):
        super().__init__()
        self.fc = nn.Linear(n_in, n_classes)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(n_classes, n_in, generator=torch.Generator().manual_seed(seed)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


# -- both attacks: the threat model -----------------------------------------------------------
CASES = [
    ("apgd", "linf", {"steps": 10, "loss": "ce"}, [2 / 255, EPS_LINF]),
    ("apgd", "linf", {"steps": 10, "loss": "margin"}, [2 / 255, EPS_LINF]),
    ("apgd", "l2", {"steps": 10, "loss": "ce"}, [0.25, 1.0]),
    ("square", "linf", {"max_queries": 30}, [2 / 255, EPS_LINF]),
    ("square", "l2", {"max_queries": 30}, [0.25, 1.0]),
]


@pytest.mark.parametrize("name, norm, params, epsilons", CASES, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_examples_stay_in_the_ball_and_in_0_1(name, norm, params, epsilons, trained_breast, breast_batch):
    model, _, _ = trained_breast
    x, y, task = breast_batch
    for out in build_attack(name, norm, 0, params)(model, x, y, epsilons, task):
        delta = (out.x_adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert float(size.max()) <= out.eps * (1 + 1e-5) + 1e-6
        assert float(out.x_adv.min()) >= 0 and float(out.x_adv.max()) <= 1


@pytest.mark.parametrize("name, params", [("apgd", {"steps": 8}), ("square", {"max_queries": 40})])
@pytest.mark.parametrize("norm, eps", [("linf", 4 / 255), ("l2", 0.5)])
def test_same_seed_same_outputs(name, params, norm, eps, trained_breast, breast_batch):
    model, _, _ = trained_breast
    x, y, task = breast_batch
    first = build_attack(name, norm, 5, params)(model, x[:16], y[:16], [eps], task)[0]
    again = build_attack(name, norm, 5, params)(model, x[:16], y[:16], [eps], task)[0]
    assert torch.equal(first.x_adv, again.x_adv)
    if name == "square":
        assert torch.equal(first.queries, again.queries)


# -- APGD -------------------------------------------------------------------------------------
def test_apgd_checkpoints_follow_the_paper():
    """p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), at ceil(p_j * steps)."""
    assert checkpoint_iterations(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoint_iterations(20) == [5, 9, 12, 14, 16, 18, 19, 20]


def test_apgd_ce_breaks_at_least_as_many_samples_as_pgd(trained_breast, breast_batch):
    model, _, _ = trained_breast
    x, y, task = breast_batch
    pgd = build_attack("pgd", "linf", 0, {"steps": 20})(model, x, y, [EPS_LINF], task)[0].x_adv
    apgd = build_attack("apgd", "linf", 0, {"steps": 20, "loss": "ce"})(model, x, y, [EPS_LINF], task)[0].x_adv
    assert n_correct(model, apgd, y, task) <= n_correct(model, pgd, y, task)
    assert n_correct(model, apgd, y, task) < n_correct(model, x, y, task)


def test_apgd_keeps_the_first_fooling_iterate():
    """A model fooled only close to x: a large step leaves that region, the kept example must not."""

    class FooledOnlyNearX(nn.Module):
        def forward(self, x):
            dist = (x - 0.5).abs().flatten(1).amax(1)
            wrong = ((dist > 0) & (dist < 0.02)).float()
            return torch.stack([1 - wrong, wrong], 1) * 10 + x.flatten(1)[:, :2] * 1e-3

    x = torch.full((4, 1, 4, 4), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    x_adv = build_attack("apgd", "linf", 0, {"steps": 5})(FooledOnlyNearX(), x, y, [0.01], get_task("binary-class"))[0].x_adv
    assert (FooledOnlyNearX()(x_adv).argmax(1) == 1).all()


def test_dlr_on_a_two_class_task_is_refused_with_the_fix(trained_breast, breast_batch):
    model, _, _ = trained_breast
    x, y, task = breast_batch
    with pytest.raises(ConfigError, match=r"(?s)at least 4 classes.*has 2.*loss=margin"):
        build_attack("apgd", "linf", 0, {"loss": "dlr", "steps": 5})(model, x[:4], y[:4], [EPS_LINF], task)
    with pytest.raises(ConfigError, match="has 2.*loss=margin"):
        build_attack("apgd", "linf", 0, {"loss": "dlr", "steps": 5, "target": "opposite"})(model, x[:4], y[:4], [EPS_LINF], task)


def test_dlr_is_refused_for_multi_label_tasks():
    x, y = torch.rand(4, 1, 4, 4), torch.randint(0, 2, (4, 5))
    with pytest.raises(ConfigError, match="multi-label.*loss=ce or loss=margin"):
        build_attack("apgd", "linf", 0, {"loss": "dlr"})(Linear(16, 5), x, y, [0.1], get_task("multi-label, binary-class"))


@pytest.mark.parametrize("params", [{"loss": "dlr"}, {"loss": "dlr", "target": "next"}], ids=["untargeted", "targeted"])
def test_dlr_runs_on_ten_classes_and_lowers_accuracy(params):
    model = Linear(16, 10)
    x = torch.rand(32, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)  # every sample starts correctly classified
    attack = build_attack("apgd", "linf", 0, {"steps": 20, **params})
    out = attack(model, x, y, [0.1], get_task("multi-class"))[0]
    assert float((out.x_adv - x).abs().max()) <= 0.1 + 1e-6
    assert int(attack.last_criterion.is_adversarial(model(out.x_adv)).sum()) > 0


def test_apgd_refuses_bad_parameters():
    with pytest.raises(ConfigError, match="ce, dlr, margin"):
        build_attack("apgd", params={"loss": "hinge"})
    with pytest.raises(ConfigError, match="steps"):
        build_attack("apgd", params={"steps": 0})


# -- Square -----------------------------------------------------------------------------------
def test_square_p_schedule_halves_at_the_papers_iterations():
    assert p_schedule(0.8, 10, 10000) == 0.8
    assert p_schedule(0.8, 11, 10000) == 0.4
    assert p_schedule(0.8, 9999, 10000) == 0.8 / 512
    assert p_schedule(0.8, 1, 100) == 0.2  # rescaled: iteration 1 of 100 is iteration 100 of 10,000


@pytest.mark.parametrize("norm, eps", [("linf", EPS_LINF), ("l2", 1.0)])
def test_square_never_exceeds_its_query_budget(norm, eps, trained_breast, breast_batch):
    model, _, _ = trained_breast
    x, y, task = breast_batch
    out = build_attack("square", norm, 0, {"max_queries": 50})(model, x, y, [eps], task)[0]
    assert out.queries.shape == (len(x),) and out.queries.dtype == torch.long
    assert int(out.queries.min()) >= 1 and int(out.queries.max()) <= 50
    assert int(out.queries.sum()) == round(out.forwards * len(x))  # every model call on a sample is counted


def test_square_charges_one_query_when_the_start_already_fools_and_the_budget_otherwise():
    """Constant logits: class-0 samples are fooled from the start, class-1 samples never are."""

    class AlwaysOne(nn.Module):
        def forward(self, x):
            return torch.tensor([0.0, 1.0]).expand(len(x), 2) + 0 * x.flatten(1)[:, :1]

    x = torch.rand(6, 1, 8, 8)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    out = build_attack("square", "linf", 0, {"max_queries": 25})(AlwaysOne(), x, y, [0.05], get_task("binary-class"))[0]
    assert out.queries.tolist() == [1, 25, 1, 25, 1, 25]


def test_square_uses_outputs_only():
    class NoGradients(Linear):
        def forward(self, x):
            assert not torch.is_grad_enabled() and not x.requires_grad, "a score-based attack asked for gradients"
            return super().forward(x)

    model = NoGradients(16, 2)
    x = torch.rand(8, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    out = build_attack("square", "linf", 0, {"max_queries": 20})(model, x, y, [0.1], get_task("binary-class"))[0]
    assert out.backwards == 0


def test_square_refuses_a_budget_that_is_not_positive():
    with pytest.raises(ConfigError, match="got 0"):
        build_attack("square", params={"max_queries": 0})
    with pytest.raises(ConfigError, match="got -5"):
        build_attack("square", params={"max_queries": -5})


# -- targeted ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, norm, params, eps",
    [
        ("apgd", "linf", {"steps": 20, "loss": "ce", "target": "opposite"}, EPS_LINF),
        ("apgd", "linf", {"steps": 20, "loss": "margin", "target": "opposite"}, EPS_LINF),
        ("square", "l2", {"max_queries": 100, "target": "opposite"}, 2.0),
    ],
    ids=["apgd-ce", "apgd-margin", "square-l2"],
)
def test_targeted_variants_reach_their_target(name, norm, params, eps, trained_breast, breast_batch):
    model, _, _ = trained_breast
    x, y, task = breast_batch
    attack = build_attack(name, norm, 0, params)
    out = attack(model, x, y, [eps], task)[0]
    target = attack.last_criterion.target
    with torch.no_grad():
        reached = model(out.x_adv).argmax(1) == target
        at_start = model(x).argmax(1) == target
    assert int((reached & ~at_start).sum()) > 0
