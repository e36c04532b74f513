"""Shared fixtures: the real MedMNIST files, synthetic files for other task types, a trained model.

The real data root comes from $MEDMNIST_ROOT (``.ci/run`` points it at
../shared/data/medmnist). Without it a test is skipped locally, but with
CI=true a missing file is a failure, never a silent skip.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from medmnist import INFO

REPO = Path(__file__).resolve().parent.parent
REAL_FLAGS = ("breastmnist", "pneumoniamnist")

if os.environ.get("PYTEST_XDIST_WORKER"):  # one of pytest-xdist's workers (pyproject's addopts): one core each,
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the scripts its tests start included
    torch.set_num_threads(1)
else:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
# Experiments in tests attack the eager model: compiling each tiny run's model would cost more than the run.
# The compiled and channels_last forms have their own tests (test_engine_speed.py, test_compile_cache.py); scripts run by tests inherit this.
os.environ.setdefault("MEDBENCH_MODEL_FORM", "torch_eager")
# Compiled artefacts of test runs go to a folder of their own, never the workspace's outputs/compile_cache: a
# test that compiles must see the same (empty) cache on a developer's machine as in CI.
os.environ.setdefault("MEDBENCH_COMPILE_CACHE", tempfile.mkdtemp(prefix="medbench-test-compile-cache-"))


def real_root_or_skip(flag: str = "breastmnist") -> Path:
    """The folder holding the real ``flag`` file; fails under CI=true, skips otherwise."""
    root = os.environ.get("MEDMNIST_ROOT")
    path = Path(root) / f"{flag}.npz" if root else None
    if path is None or not path.exists():
        message = f"real MedMNIST file {flag}.npz not found (MEDMNIST_ROOT={root!r})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI must point MEDMNIST_ROOT at ../shared/data/medmnist")
        pytest.skip(message)
    return Path(root)


@pytest.fixture(scope="session")
def real_root() -> Path:
    return real_root_or_skip("breastmnist")


# Synthetic stand-ins for task types the two real files do not cover, in the official npz layout.
SYNTHETIC = {
    "dermamnist": {"shape": (28, 28, 3)},       # RGB, multi-class (7)
    "chestmnist": {"shape": (28, 28)},          # grey, multi-label (14)
    "retinamnist": {"shape": (28, 28, 3)},      # RGB, ordinal regression (5)
    "bloodmnist": {"shape": (64, 64, 3), "size": 64},  # a size other than 28
}
SPLIT_SIZES = {"train": 96, "val": 32, "test": 48}


def _write_synthetic(root: Path, flag: str, shape: tuple[int, ...], size: int) -> str:
    """Class-dependent images (so a model can learn them) with labels of the flag's task type."""
    rng = np.random.default_rng(abs(hash(flag)) % 2**32)
    info = INFO[flag]
    n_labels = len(info["label"])
    arrays = {}
    for split, n in SPLIT_SIZES.items():
        if "multi-label" in info["task"]:
            labels = rng.integers(0, 2, size=(n, n_labels)).astype(np.uint8)
            key = labels[:, 0]
        else:
            labels = rng.integers(0, n_labels, size=(n, 1)).astype(np.uint8)
            key = labels[:, 0]
        base = rng.integers(0, 60, size=(n, *shape)).astype(np.int32)
        images = np.clip(base + (key * (190 // max(1, n_labels - 1))).reshape(-1, *[1] * len(shape)), 0, 255)
        arrays[f"{split}_images"] = images.astype(np.uint8)
        arrays[f"{split}_labels"] = labels
    name = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
    np.savez_compressed(root / name, **arrays)
    return hashlib.md5((root / name).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> tuple[Path, dict[tuple[str, int], str]]:
    """A data root with synthetic files; returns it and the md5 of each (flag, size)."""
    root = tmp_path_factory.mktemp("synthetic_medmnist")
    md5s = {}
    for flag, spec in SYNTHETIC.items():
        size = spec.get("size", 28)
        md5s[(flag, size)] = _write_synthetic(root, flag, spec["shape"], size)
    return root, md5s


@pytest.fixture
def synthetic(synthetic_root, monkeypatch) -> Path:
    """Synthetic data root, with medmnist.INFO's expected md5 set to the synthetic files' own.

    Only the expected checksum is patched, in this process: the loader still
    verifies every file exactly as it does for real ones.
    """
    root, md5s = synthetic_root
    for (flag, size), md5 in md5s.items():
        key = "MD5" if size == 28 else f"MD5_{size}"
        monkeypatch.setitem(INFO[flag], key, md5)
    return root


@pytest.fixture(scope="session")
def trained_breast(real_root, tmp_path_factory):
    """A small ResNet-18 (timm stem: cheap) trained on real BreastMNIST for a few epochs."""
    from bench.models import ModelSpec, load_checkpoint
    from bench.train import TrainConfig, train_classifier

    out = tmp_path_factory.mktemp("zoo") / "breast_native.safetensors"
    spec = ModelSpec("resnet18_native", "resnet18", "native")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the same weights in one process or in a pytest-xdist worker (one thread): the
    try:                      # thread count changes float sums, and the attack tests' budgets assume these weights
        train_classifier(spec, "breastmnist", 28, real_root, TrainConfig(epochs=8, seed=0), out)
    finally:
        torch.set_num_threads(threads)
    model, card = load_checkpoint(out, 1, 2)
    return model, card, out


# ------------------------------------------------------------------------------------------------
# leaderboard rows, as a finished run writes them
# ------------------------------------------------------------------------------------------------
STANDARD_EPS = ((1 / 255, "1/255"), (2 / 255, "2/255"), (4 / 255, "4/255"), (8 / 255, "8/255"))


def board_row(**overrides) -> dict:
    """One complete leaderboard row (every required column filled); ``overrides`` set any column."""
    from bench.leaderboard import COLUMNS

    row = dict.fromkeys(COLUMNS, "")
    row.update(
        date="2026-12-01T00:00:00+00:00", dataset="breastmnist", size=28, split="test", model="resnet18_28_seed0",
        train="epochs=100 augment=none n_train=all", defense="none", arch="resnet18", recipe="cifar_stem",
        attack="battery:standard", kind="battery", norm="linf", eps=2 / 255, eps_label="2/255", battery="standard",
        battery_hash="", n=156, seed=0, clean_acc=0.85, robust_acc=0.5, robust_acc_lo=0.42, robust_acc_hi=0.58,
        asr=0.4, asr_lo=0.3, asr_hi=0.5, clean_auc=0.9, adv_auc=0.6, flags="", unreliable="false", tag="test",
        config_hash="cfg0",
        weights_sha256="ab" * 32, git_commit="0123456789ab", versions="torch=2.14.1",
    )
    row.update(overrides)
    return row


def evaluation_rows(robust: tuple[float, ...] = (0.6, 0.4, 0.2, 0.05), standard: bool = True, **overrides) -> list[dict]:
    """The battery rows of one evaluation at the standard epsilons (the standard battery's hash when ``standard``)."""
    from bench.leaderboard.admission import standard_battery

    overrides.setdefault("battery_hash", standard_battery("linf")[1] if standard else "0000quick000")
    if not standard:
        overrides.setdefault("battery", "quick")
        overrides.setdefault("attack", "battery:quick")
    return [board_row(eps=eps, eps_label=label, robust_acc=acc, robust_acc_lo=max(0.0, acc - 0.07),
                      robust_acc_hi=min(1.0, acc + 0.07), **overrides)
            for (eps, label), acc in zip(STANDARD_EPS, robust)]
