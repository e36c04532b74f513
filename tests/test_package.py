"""medbench as an installed tool: the `medbench` command, its configs shipped in the package, files under the
user's working directory, and a wheel that runs the quickstart from a folder that is not the repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from bench.cli import COMMANDS, main
from bench.config import CONF_DIR, REPO_ROOT, workspace_root
from tests.conftest import REPO, real_root_or_skip

# The quickstart with a smoke budget: a 1-epoch model on 64 images, 16 test images.
TINY_QUICKSTART = ("experiment=quickstart", "train.epochs=1", "train.n_train=64", "dataset.n_examples=16", "logger=none")


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("attack", "train", "leaderboard", "promote", "submit", "certify", "corrupt", "paper"):
        assert name in COMMANDS and f"  {name} " in out


def test_unknown_subcommand_names_the_choices(capsys):
    assert main(["atack"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'atack'" in err and "attack, train" in err


def test_every_subcommand_module_has_a_main():
    import importlib

    for command in COMMANDS.values():
        assert callable(importlib.import_module(f"bench.cli.{command.module}").main)


def test_workspace_is_the_checkout_here_and_medbench_home_when_set(monkeypatch, tmp_path):
    monkeypatch.delenv("MEDBENCH_HOME", raising=False)
    assert workspace_root() == REPO_ROOT == REPO
    monkeypatch.setenv("MEDBENCH_HOME", str(tmp_path))
    assert workspace_root() == tmp_path.resolve()


def test_configs_live_in_the_package_and_the_checkout_links_them():
    assert CONF_DIR == REPO / "bench" / "conf" and (CONF_DIR / "config.yaml").is_file()
    assert (REPO / "conf").resolve() == CONF_DIR


def test_a_user_config_folder_extends_the_shipped_configs(tmp_path):
    """Hydra's search path: a model YAML in the user's own folder is a choice like the shipped ones."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "my_resnet.yaml").write_text(
        (CONF_DIR / "model" / "resnet18_native.yaml").read_text().replace("name: resnet18_native", "name: my_resnet"))
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "attack", f"hydra.searchpath=[file://{tmp_path}]",
                           "model=my_resnet", "--cfg", "job"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "name: my_resnet" in proc.stdout and "arch: resnet18" in proc.stdout


def _build(tmp_path: Path) -> tuple[Path, Path]:
    """``python -m build`` on a copy of the package's sources (the checkout stays free of build artefacts)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("bench", "hydra_plugins"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path / "dist"),
                           str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("medbench-*.whl")
    (sdist,) = (tmp_path / "dist").glob("medbench-*.tar.gz")
    return wheel, sdist


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_runs_the_quickstart_outside_the_repo(tmp_path):
    root = real_root_or_skip("breastmnist")
    wheel, sdist = _build(tmp_path)
    shipped = {p.relative_to(REPO).as_posix() for p in CONF_DIR.rglob("*.yaml")}
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert shipped <= names, f"configs missing from the wheel: {sorted(shipped - names)[:5]}"
    assert "hydra_plugins/medbench_sweep/launchers.py" in names and "medbench = bench.cli:main" in entry_points
    with tarfile.open(sdist) as tf:
        assert any(n.endswith("bench/conf/config.yaml") for n in tf.getnames())

    # A fresh venv holding only the wheel; its dependencies (torch & co., 2 GB) are this environment's, seen
    # through a .pth file, so the test installs medbench itself without reinstalling them.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "_medbench_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    installed = purelib / "bench"
    assert (installed / "conf" / "config.yaml").is_file()

    workdir = tmp_path / "my project"  # not the repo, and a space in the path
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MEDBENCH_HOME", "PYTHONPATH")}
    env.update(MEDMNIST_ROOT=str(root), WANDB_SILENT="true")
    where = subprocess.run([str(venv / "bin" / "medbench"), "--help"], cwd=workdir, env=env, capture_output=True,
                           text=True, timeout=120)
    assert where.returncode == 0 and "attack" in where.stdout
    proc = subprocess.run([str(venv / "bin" / "medbench"), "attack", *TINY_QUICKSTART], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "battery:quick" in proc.stdout
    # the installed package ran (not the checkout), and everything it wrote is under the working directory
    probe = subprocess.run([str(python), "-c", "import bench; print(bench.__file__)"], cwd=workdir, env=env,
                           capture_output=True, text=True, check=True)
    assert Path(probe.stdout.strip()).is_relative_to(purelib)
    assert list((workdir / "models" / "breastmnist_28").glob("resnet18_native_seed0_*.safetensors"))
    assert (workdir / "outputs" / "leaderboard" / "breastmnist_28_linf.csv").is_file()
    assert not any((installed / d).exists() for d in ("models", "outputs", "results"))
    assert not any((purelib / d).exists() for d in ("models", "outputs", "results"))
