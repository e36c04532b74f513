"""The README's usage block, run as written: every line in order, in one workspace, with smoke budgets appended.

A line that stops working (a renamed option, a changed default, a missing file a later line needs) fails here,
not in a newcomer's terminal. The budgets are appended as Hydra overrides (the last value of a key wins), so the
command itself is the README's, character for character.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, real_root_or_skip

README = REPO / "README.md"

# What each subcommand gets appended: a 1-epoch model on 64 images, 16 test images, a few hundred noise draws.
SMOKE = {
    "attack": ("train.epochs=1", "train.n_train=64", "dataset.n_examples=16", "logger=none"),
    "train": ("train.epochs=1", "train.n_train=64"),
    "corrupt": ("train.epochs=1", "train.n_train=64", "dataset.n_examples=16", "logger=none",
                "corruption.names=[pixelate]"),
    "certify": ("train.epochs=1", "train.n_train=64", "dataset.n_examples=16", "logger=none", "certify.n0=10",
                "certify.n=200", "certify.batch_size=200"),
}


def usage_block() -> list[str]:
    """The commands of the first bash block under "## Running things", comments stripped."""
    text = README.read_text()
    section = text[text.index("## Running things"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_the_block_starts_in_the_venv_and_runs_only_medbench_commands():
    lines = usage_block()
    assert lines[0] == "source .venv/bin/activate"  # the set-up commands' venv, as the README's first lines make it
    assert lines[1].startswith("export MEDMNIST_ROOT=")
    assert all(line.startswith("medbench ") for line in lines[2:]), lines
    assert lines[2] == "medbench attack experiment=quickstart"  # the main job, as the set-up command runs it


def _files_under(*folders: Path) -> set[Path]:
    return {p for folder in folders if folder.exists() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_every_usage_line_works_as_written_in_order(tmp_path):
    root = real_root_or_skip("pneumoniamnist")
    real_root_or_skip("breastmnist")
    workspace = tmp_path / "workspace"
    shutil.copytree(REPO / "results", workspace / "results")  # the tracked leaderboard the render lines read
    repo_files_before = _files_under(REPO / "models", REPO / "outputs", REPO / "results")
    env = {**os.environ, "MEDBENCH_HOME": str(workspace), "MEDMNIST_ROOT": str(root), "WANDB_SILENT": "true",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    outputs, seconds = {}, {}
    for line in usage_block()[2:]:
        subcommand = line.split()[1]
        command = " ".join([line, *SMOKE.get(subcommand, ())])
        started = time.monotonic()
        proc = subprocess.run(["bash", "-c", command], cwd=workspace, env=env, capture_output=True, text=True,
                              timeout=900)
        seconds[line] = round(time.monotonic() - started, 1)
        assert proc.returncode == 0, f"README line failed: {line}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        outputs[line] = proc.stdout
    print("seconds per README line:", seconds)  # shown with -s; the CI budget is watched
    lines = usage_block()
    # what the lines promise, checked in the workspace they wrote to
    assert "battery:quick" in outputs[lines[2]]
    multirun = next(line for line in lines if line.startswith("medbench attack -m"))
    assert "sweep: job 1/2 finished" in outputs[multirun] and "sweep: job 2/2 finished" in outputs[multirun]
    assert "2 done" in outputs["medbench sweep-status"]
    assert "model resnet18_native (seed 0)" in outputs[next(line for line in lines if "checkpoint=" in line)]
    assert list((workspace / "models" / "pneumoniamnist_28").glob("resnet18_native_seed0_*.safetensors"))  # quickstart
    assert list((workspace / "models" / "pneumoniamnist_28").glob("resnet18_28_seed0_*.safetensors"))  # train line
    assert (workspace / "outputs" / "leaderboard" / "pneumoniamnist_28_linf.csv").is_file()
    assert "would be promoted" in outputs["medbench promote --dry-run"]
    assert (workspace / "outputs" / "report" / "README.md").is_file()
    assert (workspace / "outputs" / "leaderboard" / "pneumoniamnist_28_corruptions.csv").is_file()
    assert (workspace / "outputs" / "leaderboard" / "breastmnist_28_certified_l2.csv").is_file()
    # everything went to the workspace: the checkout's own zoo, outputs and results are untouched
    assert _files_under(REPO / "models", REPO / "outputs", REPO / "results") == repo_files_before
