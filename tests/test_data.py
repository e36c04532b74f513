"""bench.data: real files, every task type, deterministic subsets, clear errors."""

from __future__ import annotations

import shutil
import time

import pytest
import torch
from medmnist import INFO

from bench.data import available_flags, dataset_info, is_3d, load_split
from bench.errors import ConfigError, DataError
from tests.conftest import REAL_FLAGS, SPLIT_SIZES, real_root_or_skip


@pytest.mark.parametrize("flag", REAL_FLAGS)
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_real_split_has_official_counts_and_range(flag, split):
    root = real_root_or_skip(flag)
    data = load_split(flag, split, root=root)
    assert len(data) == INFO[flag]["n_samples"][split]
    assert data.images.shape[1:] == (1, 28, 28)
    assert data.images.dtype == torch.float32
    assert 0.0 <= float(data.images.min()) and float(data.images.max()) <= 1.0
    assert set(data.labels.unique().tolist()) == {0, 1}


def test_data_root_defaults_to_environment(real_root, monkeypatch):
    monkeypatch.setenv("MEDMNIST_ROOT", str(real_root))
    assert len(load_split("breastmnist", "test")) == 156


def test_subset_is_deterministic_and_seed_dependent(real_root):
    a = load_split("pneumoniamnist", "test", root=real_root, n_examples=50, seed=1)
    b = load_split("pneumoniamnist", "test", root=real_root, n_examples=50, seed=1)
    c = load_split("pneumoniamnist", "test", root=real_root, n_examples=50, seed=2)
    assert len(a) == 50
    assert torch.equal(a.indices, b.indices) and torch.equal(a.images, b.images)
    assert not torch.equal(a.indices, c.indices)
    full = load_split("pneumoniamnist", "test", root=real_root)
    assert torch.equal(full.images[a.indices], a.images)


@pytest.mark.parametrize(
    "flag, channels, label_shape",
    [("dermamnist", 3, ()), ("chestmnist", 1, (14,)), ("retinamnist", 3, ())],
)
def test_synthetic_task_types_load_with_info_from_medmnist(synthetic, flag, channels, label_shape):
    data = load_split(flag, "train", root=synthetic)
    assert data.images.shape == (SPLIT_SIZES["train"], channels, 28, 28)
    assert tuple(data.labels.shape[1:]) == label_shape
    assert data.info.task_type == INFO[flag]["task"]
    assert data.info.num_classes == len(INFO[flag]["label"])


def test_other_sizes_load_from_their_own_file(synthetic):
    data = load_split("bloodmnist", "val", size=64, root=synthetic)
    assert data.images.shape == (SPLIT_SIZES["val"], 3, 64, 64)


def test_every_flag_and_size_is_described():
    for flag in available_flags():
        for size in ((28, 64) if is_3d(flag) else (28, 64, 128, 224)):
            info = dataset_info(flag, size)
            assert info.filename.startswith(flag) and info.md5
            assert info.spatial_dims == (3 if is_3d(flag) else 2)


def test_unknown_flag_lists_choices():
    with pytest.raises(ConfigError, match="pneumoniamnist"):
        dataset_info("pneumonia")


def test_size_the_flag_does_not_have():
    with pytest.raises(ConfigError, match=r"size 32 .*available sizes: \[28, 64, 128, 224\]"):
        dataset_info("breastmnist", 32)


def test_3d_flags_load_as_ncdhw_volumes_in_the_unit_interval():
    data = load_split("adrenalmnist3d", "test", root=real_root_or_skip("adrenalmnist3d"))
    assert data.images.shape == (298, 1, 28, 28, 28) and data.images.dtype == torch.float32
    assert data.images.min() >= 0 and data.images.max() == 1
    assert data.labels.shape == (298,) and int(data.labels.sum()) == 69  # the shared README's 229 / 69
    assert data.info.spatial_dims == 3 and data.info.track == "adrenalmnist3d_28"


def test_3d_sizes_are_28_and_64():
    assert dataset_info("organmnist3d", 64).filename == "organmnist3d_64.npz"
    with pytest.raises(ConfigError, match=r"size 128 .*available sizes: \[28, 64\]"):
        dataset_info("organmnist3d", 128)


def test_n_examples_larger_than_split(real_root):
    with pytest.raises(ConfigError, match=r"n_examples=157 .* 156 samples"):
        load_split("breastmnist", "test", root=real_root, n_examples=157)


def test_wrong_md5_is_refused(real_root, tmp_path):
    corrupt = tmp_path / "breastmnist.npz"
    shutil.copy(real_root / "breastmnist.npz", corrupt)
    with open(corrupt, "r+b") as fh:
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(DataError, match="md5 .* expected 750601b1f35ba3300ea97c75c52ff8f6"):
        load_split("breastmnist", "test", root=tmp_path)


def test_missing_file_without_download_names_file_and_folder(tmp_path):
    with pytest.raises(DataError) as err:
        load_split("dermamnist", "test", root=tmp_path, download=False)
    message = str(err.value)
    assert "dermamnist.npz" in message and str(tmp_path) in message and "MEDMNIST_ROOT" in message


def test_missing_file_download_failure_is_fast_and_clear(tmp_path):
    """Through medmnist's real download code; this machine (and CI) have no route to the data host."""
    started = time.perf_counter()
    try:
        load_split("dermamnist", "test", root=tmp_path, download=True)
    except DataError as err:
        assert "dermamnist.npz" in str(err) and str(tmp_path) in str(err) and "download failed" in str(err)
        assert time.perf_counter() - started < 30
        assert not (tmp_path / "dermamnist.npz").exists()
    else:  # a machine with network access really downloads it, which is also correct
        assert (tmp_path / "dermamnist.npz").exists()
