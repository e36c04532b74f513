"""Attacks on volumes (3D MedMNIST: float batches in [0, 1] shaped N, C, D, H, W).

A specification: every registered attack whose class says ``volumes = True``
runs on a batch of volumes through the engine's entry point (``Attack.__call__``,
which checks the threat model on every result), returns volumes of the input's
shape inside the eps-ball and [0, 1]; the strong attacks lower accuracy; Square
searches with cubes; 2D-only attacks (the patch) refuse volumes with an error
that names the shape and the attacks to use instead.

The model is a tiny 3D conv net trained for a few steps on synthetic volumes
whose class is their mean brightness, so every clean sample is correct with a
real margin. Everything runs on CPU in a few seconds.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.attacks import ATTACKS, build_attack, check_threat_model, flat_norm
from bench.attacks.registry import volume_attacks
from bench.attacks.square import centred_box, l2_window_pattern, l2_window_side, linf_window_side
from bench.attacks.threat import patch_side
from bench.errors import ConfigError, ThreatModelViolation
from bench.tasks import get_task

SHAPE = (8, 1, 8, 8, 8)
# Generous: the classes differ by 0.3 in mean brightness; the L2 size of a 0.15 shift is 0.15 * sqrt(512) = 3.4.
EPS = {"linf": 0.2, "l2": 6.0}
# Small budgets, keyed by registry name (a new volume attack runs with its defaults until it gets one here).
BUDGETS = {
    "pgd": {"steps": 10},
    "apgd": {"steps": 10},
    "square": {"max_queries": 30},
    "decision": {"max_queries": 60},
    "fmn": {"steps": 10},
    "cw": {"steps": 10, "binary_search_steps": 2},
    "deepfool": {"steps": 10},
    "transfer": {"steps": 3},
    "foolbox": {"kwargs": {"steps": 3}},
}
BY_NORM = {("foolbox", "linf"): {"attack": "LinfPGD"}, ("foolbox", "l2"): {"attack": "L2PGD"}}
VOLUME_CASES = [(name, norm) for name in volume_attacks() for norm in ATTACKS[name].norms]
TASK = get_task("binary-class")


def synthetic_volumes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy volumes, class 1 brighter on average than class 0; classes alternate."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = 0.5 + 0.15 * (2 * y - 1).view(-1, 1, 1, 1, 1) + 0.1 * torch.randn(n, *SHAPE[1:], generator=generator)
    return x.clamp(0, 1), y


def tiny_net(seed: int) -> nn.Module:
    """Conv3d -> ReLU -> global average -> linear, trained 25 Adam steps on 32 synthetic volumes."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2))
    x, y = synthetic_volumes(32, seed + 100)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(25):
        loss = F.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tensors this small run several times faster on one thread than on two that compete with other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return tiny_net(0)


@pytest.fixture(scope="module")
def surrogate() -> nn.Module:
    """An independently trained net, for attacks that craft on a surrogate (what their prepare() loads)."""
    return tiny_net(1)


@pytest.fixture(scope="module")
def batch(model) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = synthetic_volumes(SHAPE[0], 7)
    with torch.no_grad():
        assert bool((model(x).argmax(1) == y).all()), "the fixture model must get every clean volume right"
    return x, y


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def make_attack(name: str, norm: str, surrogate: nn.Module | None = None, **extra: object):
    attack = build_attack(name, norm, 0, {**BUDGETS.get(name, {}), **BY_NORM.get((name, norm), {}), **extra})
    if surrogate is not None and hasattr(attack, "surrogate"):
        attack.surrogate = surrogate
    return attack


# -- the registry says which attacks take volumes -----------------------------------------------
def test_volume_attacks_come_from_the_registry():
    assert volume_attacks() == sorted(name for name, cls in ATTACKS.items() if cls.volumes)
    assert {"pgd", "apgd", "square", "fgsm", "fmn"} <= set(volume_attacks())
    assert "patch" not in volume_attacks()


# -- every volume attack: shape, ball, box ------------------------------------------------------
@pytest.mark.parametrize("name, norm", VOLUME_CASES, ids=[f"{n}-{p}" for n, p in VOLUME_CASES])
def test_volume_attack_returns_volumes_inside_the_threat_model(name, norm, model, surrogate, batch):
    x, y = batch
    attack = make_attack(name, norm, surrogate)
    epsilons = [EPS[norm] / 4, EPS[norm]]
    outputs = attack(model, x, y, epsilons, TASK)  # the engine's entry point: it also checks the threat model
    assert [out.eps for out in outputs] == epsilons
    for out in outputs:
        assert out.x_adv.shape == SHAPE and out.x_adv.dtype == x.dtype
        assert float(out.x_adv.min()) >= 0 and float(out.x_adv.max()) <= 1
        size = (out.x_adv - x).flatten(1).abs().amax(1) if norm == "linf" else (out.x_adv - x).flatten(1).norm(dim=1)
        assert float(size.max()) <= out.eps * (1 + 1e-5) + 1e-6
        if attack.max_queries is not None:
            assert out.queries is not None and out.queries.shape == (len(x),)
            assert int(out.queries.max()) <= attack.max_queries


@pytest.mark.parametrize(
    "name, norm, params",
    [
        ("pgd", "linf", {}),
        ("pgd", "l2", {}),
        ("apgd", "linf", {}),
        ("apgd", "l2", {}),
        ("square", "linf", {"max_queries": 100}),
        ("square", "l2", {"max_queries": 200}),
    ],
)
def test_strong_attacks_lower_accuracy_on_volumes(name, norm, params, model, batch):
    x, y = batch
    (out,) = make_attack(name, norm, **params)(model, x, y, [EPS[norm]], TASK)
    assert accuracy(model, out.x_adv, y) < accuracy(model, x, y) == 1.0


def test_same_seed_same_square_volumes(model, batch):
    x, y = batch
    for norm in ("linf", "l2"):
        first = make_attack("square", norm, max_queries=30)(model, x, y, [EPS[norm]], TASK)[0]
        second = make_attack("square", norm, max_queries=30)(model, x, y, [EPS[norm]], TASK)[0]
        assert torch.equal(first.x_adv, second.x_adv) and torch.equal(first.queries, second.queries)


# -- Square in 3D ----------------------------------------------------------------------------------
@pytest.mark.parametrize("norm, restarts", [("linf", 1), ("l2", 1), ("linf", 2)])
def test_square_counts_queries_per_volume_within_the_budget(norm, restarts, model, batch):
    x, y = batch
    (out,) = make_attack("square", norm, max_queries=40, restarts=restarts)(model, x, y, [EPS[norm] / 2], TASK)
    assert out.queries.shape == (len(x),) and out.queries.dtype == torch.long
    assert int(out.queries.min()) >= 1 and int(out.queries.max()) <= 40
    assert int(out.queries.sum()) == round(out.forwards * len(x))  # every model call on a sample is counted


def test_square_window_is_a_cube_of_side_cbrt_p_voxels():
    spatial = SHAPE[2:]
    # L-inf: s^3 ~ p * D*H*W, at least 1, under the shortest side; L2: odd and at least 3.
    assert linf_window_side(0.1, spatial) == 4 == round((0.1 * 512) ** (1 / 3))
    assert l2_window_side(0.1, spatial) == 5
    assert linf_window_side(0.8, spatial) == 7  # 7.4 rounds to 7: capped under the side 8 anyway
    assert linf_window_side(0.05, (28, 28, 28)) == 10  # cbrt(1097.6) = 10.3
    assert linf_window_side(0.001, spatial) == 1
    # Images keep the paper's rule exactly: s^2 ~ p * H*W.
    assert linf_window_side(0.1, (28, 28)) == round(math.sqrt(0.1 * 28 * 28)) == 9
    assert l2_window_side(0.05, (28, 28)) == 7  # round(6.26) = 6, made odd


@pytest.mark.parametrize("norm, side", [("linf", 4), ("l2", 5)])
def test_square_proposals_change_one_cube(norm, side):
    """From an unperturbed start, a proposal changes exactly the voxels of one s x s x s window per sample."""
    attack = build_attack("square", norm, 0)
    x = torch.full((4, 2, 8, 8, 8), 0.5)
    propose = attack._propose_linf if norm == "linf" else attack._propose_l2
    x_new = propose(x, x.clone(), 0.1 if norm == "linf" else 1.0, 0.1, torch.Generator().manual_seed(0))
    assert x_new.shape == x.shape
    for changed in (x_new != x).any(1):  # (D, H, W)
        where = changed.nonzero()
        assert len(where) == side**3
        assert (where.amax(0) - where.amin(0) + 1).tolist() == [side, side, side]


def test_square_linf_init_is_stripes_along_the_last_axis(batch):
    """The first query (the init): one sign per (sample, channel, column), constant over depth and height."""
    seen = []

    class Spy(nn.Module):
        def forward(self, v):
            seen.append(v.clone())
            return torch.tensor([1.0, 0.0]).expand(len(v), 2) + 0 * v.flatten(1)[:, :1]  # never fooled

    x = 0.3 + 0.4 * torch.rand(SHAPE, generator=torch.Generator().manual_seed(3))
    y = torch.zeros(len(x), dtype=torch.long)
    build_attack("square", "linf", 0, {"max_queries": 2})(Spy(), x, y, [0.1], TASK)
    delta = seen[0] - x
    assert torch.allclose(delta.abs(), torch.full_like(delta, 0.1), atol=1e-6)
    assert torch.equal(delta.sign(), delta[:, :, :1, :1, :].sign().expand_as(delta))
    assert (delta[:, :, 0, 0, :] > 0).any() and (delta[:, :, 0, 0, :] < 0).any()  # stripes, not one constant sign


def test_square_l2_init_tiles_a_centred_grid_of_cubes():
    """8^3 volumes: 5 x 5 x 5 one-voxel tiles (side 8 // 5), centred, random signs, L2 norm eps."""
    seen = []

    class Spy(nn.Module):
        def forward(self, v):
            seen.append(v.clone())
            return torch.tensor([1.0, 0.0]).expand(len(v), 2) + 0 * v.flatten(1)[:, :1]

    x = torch.full((2, 1, 8, 8, 8), 0.5)
    build_attack("square", "l2", 0, {"max_queries": 1})(Spy(), x, torch.zeros(2, dtype=torch.long), [0.5], TASK)
    delta = seen[0] - x
    inside = torch.zeros(8, 8, 8, dtype=torch.bool)
    inside[1:6, 1:6, 1:6] = True
    assert bool((delta[:, 0, inside] != 0).all()) and bool((delta[:, 0, ~inside] == 0).all())
    assert torch.allclose(flat_norm(delta, "l2"), torch.full((2,), 0.5), rtol=1e-5)


def test_l2_pattern_is_a_pair_of_chebyshev_bumps():
    bump = centred_box(5, 5, 5)
    assert math.isclose(float(bump.norm()), 1.0, rel_tol=1e-6)
    # constant on Chebyshev shells (cube surfaces around the centre), largest at the centre
    assert float(bump[0, 0, 0]) == float(bump[2, 2, 0]) == float(bump[0, 2, 4]) < float(bump[1, 2, 2]) < float(bump[2, 2, 2])
    assert centred_box(3, 5).shape == (3, 5) and float(centred_box(3, 5).argmax()) == 1 * 5 + 2  # images: the paper's
    pattern = l2_window_pattern(5, 3)
    assert pattern.shape == (5, 5, 5) and math.isclose(float(pattern.norm()), 1.0, rel_tol=1e-6)
    assert bool((pattern[:2] > 0).all()) and bool((pattern[2:] < 0).all())  # front half one sign, back half the other
    assert torch.equal(pattern, pattern.transpose(1, 2))


# -- the threat-model checks the engine runs hold over all voxels -----------------------------------
def test_threat_model_check_measures_every_voxel():
    x = torch.full(SHAPE, 0.5)
    ok = x.clone()
    ok[:, :, -1, -1, -1] += 0.1
    check_threat_model(x, ok, 0.1, "linf", "probe")
    deep = x.clone()
    deep[0, 0, 7, 0, 0] += 0.2  # a change in the last depth slice only
    with pytest.raises(ThreatModelViolation, match="linf norm"):
        check_threat_model(x, deep, 0.1, "linf", "probe")
    spread = x + 0.05  # L2 over all 512 voxels: 0.05 * sqrt(512) = 1.13
    assert torch.allclose(flat_norm(spread - x, "l2"), torch.full((8,), 0.05 * math.sqrt(512)))
    check_threat_model(x, spread, 1.2, "l2", "probe")
    with pytest.raises(ThreatModelViolation, match="l2 norm"):
        check_threat_model(x, spread, 1.0, "l2", "probe")
    with pytest.raises(ThreatModelViolation, match=r"leave \[0, 1\]"):
        check_threat_model(x, x + 0.6, 1.0, "linf", "probe")
    with pytest.raises(ThreatModelViolation, match="shape"):
        check_threat_model(x, x[:, :, :4], 0.1, "linf", "probe")


# -- 2D-only attacks refuse volumes ------------------------------------------------------------------
@pytest.mark.parametrize("source", ["natural", "learned"])
def test_patch_attack_refuses_volumes_naming_the_shape_and_the_alternatives(source, model, batch):
    x, y = batch
    attack = build_attack("patch", "patch", 0, {"source": source})
    with pytest.raises(ConfigError) as error:
        attack(model, x, y, [0.25], TASK)
    message = str(error.value)
    assert "patch attack is 2D-only" in message and str(SHAPE) in message
    assert all(name in message for name in volume_attacks())
    with pytest.raises(ConfigError, match="2D-only"):
        attack.apply(x, torch.rand(1, 2, 2), torch.Generator().manual_seed(0))


def test_patch_threat_model_refuses_volumes_and_keeps_images():
    x = torch.rand(SHAPE)
    with pytest.raises(ConfigError, match=r"patch threat model is 2D-only.*\(8, 1, 8, 8, 8\)"):
        check_threat_model(x, x, 0.25, "patch", "patch")
    with pytest.raises(ConfigError, match="2D-only"):
        patch_side(0.25, x.shape)
    assert patch_side(0.25, 28) == patch_side(0.25, (2, 1, 28, 28)) == 7


def test_a_2d_surrogate_is_refused_for_volumes(monkeypatch, surrogate):
    """A transfer attack on volumes needs a volume surrogate; the error names both input shapes."""
    from types import SimpleNamespace

    import bench.models
    from bench.attacks.base import AttackContext
    from bench.errors import CheckpointError

    card = SimpleNamespace(name="flat", in_chans=1, num_classes=2, size=28, spatial_dims=2)
    monkeypatch.setattr(bench.models, "load_checkpoint", lambda path: (surrogate, card))
    info = SimpleNamespace(flag="nodulemnist3d", track="nodulemnist3d_28", n_channels=1, num_classes=2, size=28, spatial_dims=3)
    attack = build_attack("transfer", "linf", 0, {"surrogate_checkpoint": "flat.safetensors"})
    with pytest.raises(CheckpointError, match=r"takes 1x28x28 inputs .* has 1x28x28x28 with 2"):
        attack.prepare(AttackContext(info, None, "zoo", None))
