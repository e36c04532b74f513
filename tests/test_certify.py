"""The certified track of randomised smoothing: Cohen et al.'s CERTIFY and PREDICT, certified accuracy, its CSV, the script.

Real BreastMNIST images, tiny noise budgets (n0 10, n 100) so the file stays well under a minute on two cores.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.stats import binom, norm

from bench.defenses.certify import (
    ABSTAIN, Certificates, CertifySettings, certified_accuracy, certify, lower_confidence_bound, predict,
    radius_from_bound, run_certification,
)
from bench.defenses.smoothing import RandomisedSmoothing
from bench.errors import ConfigError
from bench.leaderboard import LeaderboardSchemaError
from bench.leaderboard.certified import COLUMNS, certified_path, is_certified_file, read_certified, upsert_certified
from tests.test_experiment import run_script

RADII = (0.0, 0.1, 0.25, 0.5)


@pytest.fixture(scope="module")
def breast_test_images(real_root):
    from bench.data import load_split

    return load_split("breastmnist", "test", 28, real_root, n_examples=24, seed=0)


@pytest.fixture(scope="module")
def tiny_model(real_root, tmp_path_factory):
    """A ResNet-18 (timm stem) trained for one epoch on 64 BreastMNIST images: any trained classifier will do."""
    from bench.models import ModelSpec, load_checkpoint
    from bench.train import TrainConfig, train_classifier

    out = tmp_path_factory.mktemp("certify_zoo") / "tiny.safetensors"
    train_classifier(ModelSpec("resnet18_native", "resnet18", "native"), "breastmnist", 28, real_root,
                     TrainConfig(epochs=1, n_train=64, seed=0), out)
    model, _ = load_checkpoint(out, 1, 2)
    return model, out


class Constant(nn.Module):
    """A base classifier that always says ``label``, whatever the noise."""

    def __init__(self, label: int, classes: int = 2):
        super().__init__()
        self.label, self.classes = label, classes
        self.eval()

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.classes)
        out[:, self.label] = 1.0
        return out


class Coin(nn.Module):
    """A base classifier that ignores its input and answers a uniformly random class (its own seeded generator)."""

    def __init__(self, classes: int, seed: int = 0):
        super().__init__()
        self.classes, self.generator = classes, torch.Generator().manual_seed(seed)
        self.eval()

    def forward(self, x):
        return torch.rand(x.shape[0], self.classes, generator=self.generator)


def linear_classifier(classes: int = 3) -> nn.Module:
    """A fixed random linear classifier: its votes under noise are split, so counts carry information."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, classes)).eval()


# ------------------------------------------------------------------------------------------------
# the statistics, by hand
# ------------------------------------------------------------------------------------------------
def test_lower_bound_and_radius_match_a_hand_computation():
    # all n draws agree: the one-sided Clopper-Pearson bound has the closed form alpha ** (1 / n)
    assert lower_confidence_bound(100, 100, 0.001) == pytest.approx(0.001 ** (1 / 100), rel=1e-9)
    # in general it is the p at which seeing >= k successes has probability alpha
    for k, n, alpha in [(990, 1000, 0.001), (60, 100, 0.05), (99_000, 100_000, 0.001)]:
        p = lower_confidence_bound(k, n, alpha)
        assert binom.sf(k - 1, n, p) == pytest.approx(alpha, rel=1e-6)
    assert lower_confidence_bound(0, 100, 0.001) == 0.0
    # radius = sigma * Phi^-1(pA_lower): 0 at 1/2, 0.25 * 1.5 near pA_lower = Phi(1.5)
    assert radius_from_bound(0.5, 0.25) == pytest.approx(0.0, abs=1e-12)
    assert radius_from_bound(norm.cdf(1.5), 0.25) == pytest.approx(0.375)
    assert radius_from_bound(0.001 ** 0.01, 0.12) == pytest.approx(0.12 * norm.ppf(0.001 ** 0.01))


def test_a_constant_base_classifier_is_certified_everywhere_with_the_bound_of_n_agreeing_draws(breast_test_images):
    n, alpha, sigma = 100, 0.001, 0.25
    smoothed = RandomisedSmoothing(Constant(1), sigma=sigma)
    certs = certify(smoothed, breast_test_images.images, n0=10, n=n, alpha=alpha, batch_size=64, seed=0)
    expected_bound = alpha ** (1 / n)  # 0.9332...
    assert certs.prediction == [1] * len(breast_test_images)
    assert certs.count == [n] * len(breast_test_images)
    assert certs.pa_lower == pytest.approx([expected_bound] * len(breast_test_images), rel=1e-9)
    assert certs.radius == pytest.approx([sigma * norm.ppf(expected_bound)] * len(breast_test_images), rel=1e-9)  # 0.375
    # certified accuracy is the share of label 1 up to that radius, none beyond
    share = float((breast_test_images.labels == 1).float().mean())
    points = certified_accuracy(certs, breast_test_images.labels.tolist(), [0.0, 0.37, 0.38])
    assert [p.certified_acc for p in points] == pytest.approx([share, share, 0.0])
    # PREDICT, too, always answers: 100 votes to 0 is far beyond alpha
    assert predict(smoothed, breast_test_images.images, n=n, alpha=alpha).tolist() == [1] * len(breast_test_images)


@pytest.mark.parametrize("classes", [2, 3])
def test_predict_on_a_coin_abstains_but_at_most_alpha_of_the_time(breast_test_images, classes):
    """No class is the smoothed prediction of a coin, so every answer is an error: at most alpha of them."""
    trials, alpha = 400, 0.05
    images = breast_test_images.images.repeat(trials // len(breast_test_images) + 1, 1, 1, 1)[:trials]
    out = predict(Coin(classes), images, n=50, alpha=alpha, batch_size=1000, sigma=0.25, num_classes=classes)
    answered = float((out != ABSTAIN).float().mean())
    assert answered <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)
    assert float((out == ABSTAIN).float().mean()) > 0.9


def test_the_same_seed_gives_the_same_certificate_whatever_the_batch_size(tiny_model, breast_test_images):
    model, _ = tiny_model
    smoothed = RandomisedSmoothing(model, sigma=0.25)
    images = breast_test_images.images[:4]
    a = certify(smoothed, images, n0=10, n=100, alpha=0.001, batch_size=64, seed=3)
    b = certify(smoothed, images, n0=10, n=100, alpha=0.001, batch_size=37, seed=3)  # copies of two images per pass
    assert (a.prediction, a.count, a.pa_lower, a.radius) == (b.prediction, b.count, b.pa_lower, b.radius)
    # split votes (a random linear classifier, three classes) show that the seed decides the draws
    linear = RandomisedSmoothing(linear_classifier(), sigma=0.5)
    c = certify(linear, images, n0=10, n=100, alpha=0.001, batch_size=50, seed=3)
    d = certify(linear, images, n0=10, n=100, alpha=0.001, batch_size=50, seed=3)
    e = certify(linear, images, n0=10, n=100, alpha=0.001, batch_size=50, seed=4)
    assert c.count == d.count and c.prediction == d.prediction
    assert c.count != e.count
    # a sample's certificate depends on its index in the split, not on the other samples certified with it
    alone = certify(linear, images[2:3], n0=10, n=100, alpha=0.001, batch_size=50, seed=3, indices=[2])
    assert alone.count == c.count[2:3]


def test_certified_accuracy_follows_its_definition_and_never_rises_with_the_radius(breast_test_images):
    # hand case: abstained, correct at 0.3, correct at 0.05, wrong at 0.6
    certs = Certificates([0, 1, 2, 3], [ABSTAIN, 1, 0, 1], [40, 90, 70, 95], [0.4, 0.9, 0.6, 0.95],
                         [0.0, 0.3, 0.05, 0.6], sigma=0.25, n0=10, n=100, alpha=0.001)
    points = certified_accuracy(certs, [1, 1, 0, 0], RADII)
    assert [p.certified_acc for p in points] == [0.5, 0.25, 0.25, 0.0]
    assert all(p.certified_acc_lo <= p.certified_acc <= p.certified_acc_hi for p in points)
    # any classifier: monotone non-increasing over a fine grid of radii
    linear = RandomisedSmoothing(linear_classifier(2), sigma=0.25)
    real = certify(linear, breast_test_images.images, n0=10, n=100, alpha=0.001, batch_size=256, seed=0)
    accs = [p.certified_acc for p in certified_accuracy(real, breast_test_images.labels.tolist(), np.linspace(0, 1, 41))]
    assert all(b <= a for a, b in zip(accs, accs[1:]))


@pytest.mark.parametrize("bad, message", [
    ({"n0": 200, "n": 100}, "n0=200 > n=100"),
    ({"alpha": 1.0}, "alpha=1.0 must lie strictly between 0 and 1"),
    ({"alpha": 0}, "alpha=0 must lie strictly between 0 and 1"),
    ({"radii": (0.0, -0.1)}, r"radii \[-0.1\]"),
    ({"sigma": 0.0}, "sigma=0.0 must be a number > 0"),
])
def test_bad_settings_are_refused_naming_the_value(bad, message):
    with pytest.raises(ConfigError, match=message):
        CertifySettings(**{"sigma": 0.25, "n0": 10, "n": 100, **bad})


def test_a_multi_label_dataset_is_refused_before_anything_is_loaded(tmp_path):
    from bench.config import compose

    cfg = compose(["dataset=chestmnist", f"paths.output_root={tmp_path}", "data.root=/nonexistent"], "certify")
    with pytest.raises(ConfigError, match="multi-label.*certifies one top class"):
        run_certification(cfg, tmp_path / "run")
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------
# the certified track's CSV
# ------------------------------------------------------------------------------------------------
def certified_row(**overrides) -> dict:
    row = dict(date="2026-12-01T00:00:00+00:00", dataset="breastmnist", size=28, split="test", n=156,
               model="resnet18_native_seed0", train="", defense="smoothing", arch="resnet18", recipe="native",
               sigma=0.25, n0=100, n_noise=100_000, alpha=0.001, seed=0, radius=0.25, certified_acc=0.5,
               certified_acc_lo=0.42, certified_acc_hi=0.58, abstain_rate=0.1, mean_radius=0.3, seconds=12.0,
               device="cpu", tag="", config_hash="cfg0", weights_sha256="ab" * 32, git_commit="0123456789ab",
               versions="torch=2.14.1")
    row.update(overrides)
    return row


def test_certified_rows_upsert_by_key_and_a_bad_cell_is_named_and_left(tmp_path):
    path = certified_path(tmp_path, "breastmnist", 28)
    assert path.name == "breastmnist_28_certified_l2.csv" and is_certified_file(path)
    assert not is_certified_file(tmp_path / "breastmnist_28_l2.csv")
    upsert_certified(path, [certified_row(radius=0.0, certified_acc=0.7, certified_acc_hi=0.8), certified_row()])
    upsert_certified(path, [certified_row(certified_acc=0.45)])  # the same evaluation and radius: replaced
    assert sorted((r["radius"], r["certified_acc"]) for r in read_certified(path)) == [("0", "0.7"), ("0.25", "0.45")]
    with pytest.raises(LeaderboardSchemaError, match="column n_noise is ''"):
        upsert_certified(path, [certified_row(n_noise=None)])
    text = path.read_text().replace(",0.45,", ",1.45,")
    path.write_text(text)
    column = COLUMNS.index("certified_acc") + 1
    with pytest.raises(LeaderboardSchemaError, match=rf"{path.name}: line 3, column {column} \(certified_acc\) is '1.45'"):
        upsert_certified(path, [certified_row(config_hash="other")])
    assert path.read_text() == text


# ------------------------------------------------------------------------------------------------
# the script, end to end
# ------------------------------------------------------------------------------------------------
CHEAP = ("certify.n0=10", "certify.n=100", "certify.batch_size=128", "dataset.n_examples=5", "logger=none",
         "defense.params.sigma=0.25")


def test_the_script_writes_one_valid_row_per_radius_with_the_n_it_used_and_resumes_when_killed(
        tiny_model, real_root, tmp_path, capsys):
    from bench.config import compose

    _, checkpoint = tiny_model
    proc = run_script("certify.py", f"checkpoint={checkpoint}", *CHEAP, tmp=tmp_path, root=real_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    board = certified_path(tmp_path / "out" / "leaderboard", "breastmnist", 28)
    rows = read_certified(board)
    assert [float(r["radius"]) for r in rows] == list(RADII)
    assert {(r["n_noise"], r["n0"], r["n"], r["alpha"], r["sigma"], r["split"], r["defense"]) for r in rows} == {
        ("100", "10", "5", "0.001", "0.25", "test", "smoothing(sigma=0.25)")}
    accs = [float(r["certified_acc"]) for r in rows]
    assert all(b <= a for a, b in zip(accs, accs[1:]))
    assert len({r["config_hash"] for r in rows}) == 1 and all(len(r["weights_sha256"]) == 64 for r in rows)
    assert "certified_acc" in proc.stdout and "n_noise" in proc.stdout

    # killed after two samples (one sample per step: 128 // 100), the same command resumes to the same certificates
    (records,) = (tmp_path / "out" / "records").rglob("certificates.csv")
    without_seconds = lambda text: [line.rsplit(",", 1)[0] for line in text.splitlines()]
    complete = without_seconds(records.read_text())
    records.write_text("".join(records.read_text().splitlines(keepends=True)[:3]))
    cfg = compose([f"checkpoint={checkpoint}", *CHEAP, f"paths.zoo_dir={tmp_path / 'zoo'}",
                   f"paths.output_root={tmp_path / 'out'}", f"data.root={real_root}"], "certify")
    again = run_certification(cfg, tmp_path / "again")
    assert "resuming: 2/5 samples already certified" in capsys.readouterr().out
    assert without_seconds(records.read_text()) == complete
    same = ("radius", "certified_acc", "abstain_rate", "mean_radius", "config_hash", "n_noise")
    assert [{k: r[k] for k in same} for r in read_certified(board)] == [{k: str(r[k]) if not isinstance(r[k], float)
                                                                      else f"{r[k]:.6g}" for k in same} for r in again]


def test_a_bad_argument_fails_before_any_compute_and_writes_nothing(tiny_model, real_root, tmp_path):
    _, checkpoint = tiny_model
    proc = run_script("certify.py", f"checkpoint={checkpoint}", *CHEAP, "certify.n0=1000", tmp=tmp_path, root=real_root)
    assert proc.returncode != 0
    assert "n0=1000 > n=100" in proc.stderr and "Nothing was computed" in proc.stderr
    assert not (tmp_path / "out" / "leaderboard").exists()
    assert not (tmp_path / "zoo").exists()


def test_only_whole_split_certificates_are_promoted_and_the_readme_shows_them(tmp_path):
    from bench.leaderboard.certified import certified_markdown, promote_certified

    local, results = tmp_path / "local", tmp_path / "results"
    upsert_certified(certified_path(local, "breastmnist", 28),
                     [certified_row(radius=r, certified_acc=a, certified_acc_lo=a - 0.1, certified_acc_hi=a + 0.1)
                      for r, a in ((0.0, 0.8), (0.25, 0.5))]
                     + [certified_row(config_hash="smoke", n=5, radius=0.0)])
    lines = promote_certified(local, results)
    assert any(line.strip().startswith("promoted") and "n=156" in line for line in lines)
    assert any("kept local" in line and "n=5 is a subset of the 156-image test split" in line for line in lines)
    promoted = read_certified(certified_path(results, "breastmnist", 28))
    assert {r["config_hash"] for r in promoted} == {"cfg0"} and len(promoted) == 2
    table = "\n".join(certified_markdown(certified_path(results, "breastmnist", 28)))
    assert "| r=0 | r=0.25 |" in table and "| 0.800 [0.70, 0.90] | 0.500 [0.40, 0.60] |" in table
