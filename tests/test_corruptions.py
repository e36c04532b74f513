"""The corruption track (MedMNIST-C): every corruption applies at 28 and 224, deterministically and cached with
checksums; balanced error is sklearn's; the script writes valid rows, resumes, and refuses bad input up front.

Real BreastMNIST and PneumoniaMNIST images (a handful each); synthetic RGB DermaMNIST for the task-specific
corruptions (characters, black corner). Needs medmnistc and ImageMagick (.ci/run installs both).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from tests.test_experiment import REPO, TINY, run_script


def medmnistc_or_skip() -> None:
    """medmnistc and ImageMagick must import: fail under CI=true (it installs them), skip elsewhere."""
    from bench.corruptions.catalog import CorruptionUnavailable, medmnistc_registry

    try:
        medmnistc_registry()
    except CorruptionUnavailable as err:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(err))
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def pneumonia_images(real_root):
    from bench.corruptions.generate import to_uint8
    from bench.data import load_split
    from tests.conftest import real_root_or_skip

    medmnistc_or_skip()
    split = load_split("pneumoniamnist", "test", 28, real_root_or_skip("pneumoniamnist"), n_examples=6, seed=0)
    return to_uint8(split.images), split.indices.numpy()


# ------------------------------------------------------------------------------------------------
# the corruptions themselves
# ------------------------------------------------------------------------------------------------
def test_every_pneumonia_and_breast_corruption_gives_uint8_images_of_the_same_layout_at_every_severity(
        pneumonia_images):
    from bench.corruptions.catalog import SEVERITIES, corruptions_for
    from bench.corruptions.generate import corrupt_one

    images, indices = pneumonia_images
    names = {**corruptions_for("pneumoniamnist"), **corruptions_for("breastmnist")}
    # the two 0.1.0 breakages are worked around: impulse_noise (no rng) and motion_blur (NumPy 2's fromstring)
    assert {"impulse_noise", "motion_blur"} <= set(names) and len(names) == 14
    for corruption in names.values():
        for s in SEVERITIES:
            out = corrupt_one(images[0], corruption, s, seed=0, index=int(indices[0]))
            assert out.dtype == np.uint8 and out.shape == images[0].shape, (corruption.name, s)
    strongest = corrupt_one(images[0], names["gaussian_noise"], 5, 0, int(indices[0])).astype(int)
    assert np.abs(strongest - images[0]).mean() > 3  # it corrupts


def test_a_corruption_is_a_function_of_seed_corruption_severity_and_sample_index_only(pneumonia_images):
    from bench.corruptions.catalog import corruptions_for
    from bench.corruptions.generate import corrupted_set

    images, indices = pneumonia_images
    noise = corruptions_for("pneumoniamnist")["impulse_noise"]
    whole = corrupted_set(images, indices, noise, seed=0, cache_dir=None)
    again = corrupted_set(images, indices, noise, seed=0, cache_dir=None)
    subset = corrupted_set(images[[4, 1]], indices[[4, 1]], noise, seed=0, cache_dir=None)
    other_seed = corrupted_set(images, indices, noise, seed=1, cache_dir=None)
    assert whole.sha256 == again.sha256
    assert np.array_equal(subset.images[:, 0], whole.images[:, 4]) and np.array_equal(subset.images[:, 1], whole.images[:, 1])
    assert all(a != b for a, b in zip(whole.sha256, other_seed.sha256))
    # severities get stronger: more pixels flipped to salt or pepper
    changed = [(whole.severity(s) != images).mean() for s in (1, 5)]
    assert changed[0] < changed[1]


def test_spatial_corruptions_act_at_224_and_an_unchanged_image_round_trips_exactly(pneumonia_images):
    from PIL import Image

    from bench.corruptions.catalog import SPATIAL, corruptions_for
    from bench.corruptions.generate import corrupt_one

    images, indices = pneumonia_images
    # nearest-neighbour up to 224 and a box filter back is the identity at 28 (8 divides 224)
    up = Image.fromarray(images[0]).resize((224, 224), Image.NEAREST)
    assert np.array_equal(np.asarray(up.resize((28, 28), Image.BOX)), images[0])
    blur = corruptions_for("pneumoniamnist")["gaussian_blur"]
    assert blur.spatial and "gaussian_blur" in SPATIAL and not corruptions_for("pneumoniamnist")["pixelate"].spatial
    # a 3-pixel kernel at 224 is a fraction of a pixel at 28: the severity-1 blur barely moves any pixel
    light = corrupt_one(images[0], blur, 1, 0, int(indices[0])).astype(int)
    assert np.abs(light - images[0]).max() <= 8
    # at 224 (a user's MedMNIST+ file) the corruption runs on the image as it is, with no resampling
    big = np.asarray(up)
    assert corrupt_one(big, blur, 5, 0, 0).shape == (224, 224)


def test_rgb_datasets_get_their_task_specific_corruptions_at_28(synthetic):
    from bench.corruptions.catalog import SEVERITIES, corruptions_for
    from bench.corruptions.generate import corrupt_one, to_uint8
    from bench.data import load_split

    medmnistc_or_skip()
    split = load_split("dermamnist", "test", 28, synthetic, n_examples=2, seed=0)
    image = to_uint8(split.images)[0]
    derma = corruptions_for("dermamnist")
    assert {"characters", "black_corner", "zoom_blur"} <= set(derma)
    for name in ("characters", "black_corner", "motion_blur", "defocus_blur"):
        for s in SEVERITIES:
            out = corrupt_one(image, derma[name], s, 0, 0)
            assert out.shape == (28, 28, 3) and out.dtype == np.uint8
    assert corruptions_for("dermamnist_melanoma").keys() == derma.keys()  # a binary view uses its base's list


def test_an_unknown_corruption_or_dataset_is_refused_naming_the_choices():
    from bench.corruptions.catalog import CorruptionUnavailable, select
    from bench.errors import ConfigError

    medmnistc_or_skip()
    with pytest.raises(ConfigError, match=r"unknown pneumoniamnist corruption 'fog'.*gaussian_noise.*corruption\.names"):
        select("pneumoniamnist", ["fog"])
    with pytest.raises(CorruptionUnavailable, match="no corruptions for 'adrenalmnist3d'.*pneumoniamnist"):
        select("adrenalmnist3d", None)


def test_without_medmnistc_the_error_says_how_to_install_it_and_imagemagick():
    code = ("import sys; sys.modules['medmnistc'] = None\n"
            "from bench.corruptions.catalog import select\n"
            "try:\n    select('breastmnist', None)\nexcept Exception as e:\n    print(type(e).__name__, e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO).stdout
    assert out.startswith("CorruptionUnavailable cannot import medmnistc")
    assert "libmagickwand-6.q16-6" in out and "--no-deps medmnistc==0.1.0" in out


# ------------------------------------------------------------------------------------------------
# cache and checksums
# ------------------------------------------------------------------------------------------------
def test_cached_sets_are_reused_and_a_tampered_cache_is_regenerated(pneumonia_images, tmp_path, capsys):
    from bench.corruptions.catalog import corruptions_for
    from bench.corruptions.generate import checksum, corrupted_set

    images, indices = pneumonia_images
    jpeg = corruptions_for("pneumoniamnist")["jpeg_compression"]
    first = corrupted_set(images, indices, jpeg, 0, tmp_path)
    assert first.path is not None and first.path.exists()
    assert first.sha256 == tuple(checksum(first.images[k]) for k in range(5))
    stamp = first.path.stat().st_mtime_ns
    assert corrupted_set(images, indices, jpeg, 0, tmp_path).sha256 == first.sha256
    assert first.path.stat().st_mtime_ns == stamp  # read, not rewritten
    with np.load(first.path) as data:
        bad = data["images"].copy()
        sums = data["sha256"]
    bad[2, 0, 0, 0] ^= 1
    np.savez_compressed(first.path, images=bad, sha256=sums)
    again = corrupted_set(images, indices, jpeg, 0, tmp_path)
    assert "fail their checksums; regenerating" in capsys.readouterr().out
    assert again.sha256 == first.sha256 and np.array_equal(again.images, first.images)


# ------------------------------------------------------------------------------------------------
# balanced error
# ------------------------------------------------------------------------------------------------
def test_balanced_error_is_one_minus_sklearns_balanced_accuracy_also_per_bootstrap_resample():
    from bench.corruptions.metrics import balanced_error

    rng = np.random.default_rng(0)
    labels, pred = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    assert balanced_error(labels, pred) == pytest.approx(1 - balanced_accuracy_score(labels, pred))
    idx = rng.integers(0, 200, size=(5, 200))
    resampled = balanced_error(labels, pred, idx)
    assert resampled == pytest.approx([1 - balanced_accuracy_score(labels[i], pred[i]) for i in idx])
    # multi-label: the mean over labels, each a binary task
    ml_labels, ml_pred = rng.integers(0, 2, (50, 4)), rng.integers(0, 2, (50, 4))
    expected = np.mean([1 - balanced_accuracy_score(ml_labels[:, j], ml_pred[:, j]) for j in range(4)])
    assert balanced_error(ml_labels, ml_pred) == pytest.approx(expected)
    # a constant predictor on an imbalanced binary task: accuracy 0.9, balanced error 0.5
    assert balanced_error(np.array([0] * 9 + [1]), np.zeros(10, int)) == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------
# the script, its rows, promotion and the report
# ------------------------------------------------------------------------------------------------
SMOKE = ("corruption.names=[pixelate,speckle_noise]", "logger=none", "model=resnet18_native")


def corruption_rows(model: str, be: float, names: list[str], n: int = 156, dataset: str = "breastmnist") -> list[dict]:
    """One evaluation's rows as scripts/corrupt.py writes them: every corruption x (5 severities + mean), then all."""
    from bench.corruptions.catalog import SEVERITIES
    from bench.leaderboard.corruption import ALL, MEAN

    base = dict(date="2026-12-04T00:00:00+00:00", dataset=dataset, size=28, split="test", n=n, model=model,
                defense="none", arch="resnet18", recipe="native", family="", params="", applied_at=28,
                corruption_seed=0, medmnistc="0.1.0", images_sha256="0" * 64, balanced_error=be,
                balanced_error_lo=be - 0.05, balanced_error_hi=be + 0.05, balanced_error_increase=0.02, acc=0.7,
                auc=0.8, clean_balanced_error=be - 0.02, clean_acc=0.8, clean_auc=0.85, seconds=1.0,
                config_hash=f"cfg-{model}", weights_sha256="a" * 64, git_commit="abc", versions="x")
    rows = [{**base, "corruption": c, "severity": str(s)} for c in names for s in (*SEVERITIES, MEAN)]
    return rows + [{**base, "corruption": ALL, "severity": MEAN}]


def test_the_script_writes_valid_rows_resumes_and_a_subset_is_never_promoted(real_root, tmp_path):
    from bench.leaderboard.corruption import ALL, CORRUPTION, MEAN, admission, evaluations, promote_corruption

    medmnistc_or_skip()
    proc = run_script("corrupt.py", *TINY, *SMOKE, tmp=tmp_path, root=real_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    board = CORRUPTION.path(tmp_path / "out" / "leaderboard", "breastmnist", 28)
    rows = CORRUPTION.read(board)
    # 2 corruptions x (5 severities + their mean) + the overall mean
    assert len(rows) == 13 and [(r["corruption"], r["severity"]) for r in rows][-1] == (ALL, MEAN)
    severity_rows = [r for r in rows if r["severity"] != MEAN]
    assert {r["applied_at"] for r in severity_rows} == {"28"} and all(len(r["images_sha256"]) == 64 for r in rows)
    assert len({r["images_sha256"] for r in severity_rows}) == 10
    overall = rows[-1]
    assert float(overall["balanced_error"]) == pytest.approx(np.mean([float(r["balanced_error"]) for r in severity_rows]), abs=1e-5)
    assert all(float(r["balanced_error_lo"]) <= float(r["balanced_error"]) <= float(r["balanced_error_hi"]) for r in rows)
    assert {r["n"] for r in rows} == {"16"} and {r["medmnistc"] for r in rows} == {"0.1.0"}
    assert "balanced error by severity" in proc.stdout

    # the same command again: every corruption comes from the records, the rows are the same
    again = run_script("corrupt.py", *TINY, *SMOKE, tmp=tmp_path, root=real_root)
    assert again.returncode == 0 and again.stdout.count("resumed from records") == 2
    same = ("corruption", "severity", "balanced_error", "images_sha256", "config_hash")
    assert [{k: r[k] for k in same} for r in CORRUPTION.read(board)] == [{k: r[k] for k in same} for r in rows]

    # 16 of 156 test images and 2 of 7 corruptions: kept local, never promoted
    (evaluation,) = evaluations(rows)
    assert "subset of the 156-image test split" in admission(evaluation)
    lines = promote_corruption(board.parent, tmp_path / "results", dry_run=False)
    assert lines[0].lstrip().startswith("kept local") and not (tmp_path / "results").exists()


def test_bad_input_fails_before_any_compute_and_writes_nothing(real_root, tmp_path):
    medmnistc_or_skip()
    proc = run_script("corrupt.py", *TINY, *SMOKE[1:], "corruption.names=[fog]", tmp=tmp_path, root=real_root)
    assert proc.returncode != 0 and "unknown breastmnist corruption 'fog'" in proc.stderr
    assert not (tmp_path / "zoo").exists() and not (tmp_path / "out" / "leaderboard").exists()


def test_a_complete_evaluation_is_ranked_by_mean_balanced_error_on_the_page_and_in_markdown(tmp_path):
    from bench.corruptions.catalog import corruptions_for
    from bench.leaderboard.corruption import CORRUPTION, corruption_markdown, ranked
    from bench.report.page import render_html

    medmnistc_or_skip()
    names = list(corruptions_for("breastmnist"))

    board = CORRUPTION.path(tmp_path, "breastmnist", 28)
    CORRUPTION.upsert(board, corruption_rows("worse", 0.40, names) + corruption_rows("better", 0.30, names)
                      + corruption_rows("subset", 0.10, names, n=32))
    order = [(rank, ev[0]["model"]) for rank, ev, _ in ranked(CORRUPTION.read(board))]
    assert order == [(1, "better"), (2, "worse"), (None, "subset")]  # a subset never outranks, whatever its error
    markdown = "\n".join(corruption_markdown(board))
    assert "| 1 | better |" in markdown and "unranked: n=32 is a subset" in markdown
    page = render_html([], "results/leaderboard", [board])
    assert 'id="corruptions"' in page and "<td>better</td>" in page and "0.300 [0.25, 0.35]" in page
    # a row whose interval excludes its value is refused, naming the column; the file is left as it was
    before = board.read_text()
    with pytest.raises(Exception, match="balanced_error_lo"):
        CORRUPTION.upsert(board, [{**corruption_rows("bad", 0.2, names)[0], "balanced_error_lo": 0.5}])
    assert board.read_text() == before


def test_another_size_and_an_rgb_dataset_run_the_whole_track(synthetic, tmp_path):
    """BloodMNIST at 64x64 (synthetic, RGB, 8 classes): the spatial corruptions go through 224 and back, the
    rest act at 64, and every row is written (a model is trained into the zoo on the way)."""
    from bench.config import compose
    from bench.corruptions.catalog import corruptions_for
    from bench.corruptions.track import run_corruption_track

    medmnistc_or_skip()
    names = ["pixelate", "bubble", "stain_deposit", "saturate"]  # two spatial, two not
    cfg = compose(["dataset=bloodmnist", "dataset.size=64", "model=resnet18_native", "train.epochs=1",
                   "train.n_train=32", "dataset.n_examples=12", "logger=none", f"corruption.names=[{','.join(names)}]",
                   f"data.root={synthetic}", f"paths.zoo_dir={tmp_path / 'zoo'}", f"paths.output_root={tmp_path / 'out'}"],
                  "corrupt")
    rows = run_corruption_track(cfg, tmp_path / "run")
    spatial = {n for n in names if corruptions_for("bloodmnist")[n].spatial}
    assert spatial == {"bubble", "stain_deposit"}
    assert {(r["corruption"], r["applied_at"]) for r in rows if r["severity"] == "1"} == {
        (n, 224 if n in spatial else 64) for n in names}
    assert len(rows) == len(names) * 6 + 1 and all(r["n"] == 12 and r["size"] == 64 for r in rows)


def test_only_complete_evaluations_of_models_already_on_the_leaderboard_are_promoted(tmp_path):
    """A paper study's twenty models stay in results/paper/; the corruption track describes the leaderboard's."""
    from bench.corruptions.catalog import corruptions_for
    from bench.leaderboard.corruption import CORRUPTION, promote_corruption
    from bench.leaderboard.store import track_path, upsert_rows
    from tests.conftest import board_row

    medmnistc_or_skip()
    names = list(corruptions_for("breastmnist"))
    source, target = tmp_path / "local", tmp_path / "results"
    on_board = corruption_rows("resnet18_native_seed0", 0.3, names)
    elsewhere = [{**r, "weights_sha256": "b" * 64} for r in corruption_rows("resnet18_native_seed7", 0.3, names)]
    CORRUPTION.upsert(CORRUPTION.path(source, "breastmnist", 28), on_board + elsewhere)
    upsert_rows(track_path(target, "breastmnist", 28, "linf"), [board_row(weights_sha256="a" * 64)])
    lines = promote_corruption(source, target)
    assert lines[0].lstrip().startswith("promoted") and "seed0" in lines[0]
    assert lines[1].lstrip().startswith("kept local") and "no row on the leaderboard" in lines[1]
    assert {r["model"] for r in CORRUPTION.read(CORRUPTION.path(target, "breastmnist", 28))} == {"resnet18_native_seed0"}
