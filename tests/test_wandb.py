"""The W&B run holds what summary.json holds: read an offline run back from its own transaction log."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import ConfigError
from bench.logging import read_offline_run
from tests.conftest import REPO

RUN = ("battery=quick", "battery.attacks.pgd_linf.params.steps=5", "battery.attacks.foolbox_linf_pgd.params.kwargs.steps=5",
       "dataset.n_examples=24", "logger=wandb")


def attack(checkpoint: Path, out: Path, root: Path, *extra: str, multirun: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEDMNIST_ROOT": str(root), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    cmd = [sys.executable, str(REPO / "scripts" / "attack.py"), *(["-m"] if multirun else []),
           f"checkpoint={checkpoint}", f"paths.output_root={out}", f"paths.leaderboard_dir={out / 'leaderboard'}", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9) or (math.isnan(a) and math.isnan(b))
    return a == b


@pytest.mark.slow
def test_offline_run_holds_config_metrics_chart_images_and_per_sample_table(trained_breast, real_root, tmp_path):
    proc = attack(trained_breast[2], tmp_path, real_root, *RUN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = list(tmp_path.rglob("wandb/offline-run-*"))
    (summary_path,) = list((tmp_path / "runs").rglob("summary.json"))
    rows = json.loads(summary_path.read_text())
    logged = read_offline_run(run_dir)
    assert read_offline_run(summary_path.parent) == logged  # the Hydra run folder a run prints works too
    with pytest.raises(ConfigError, match="no run-\\*.wandb file"):
        read_offline_run(tmp_path / "runs" / "nowhere")

    assert logged["config"]["dataset"]["flag"] == "breastmnist"
    assert logged["config"]["battery"]["name"] == "quick"
    # one history step per epsilon with every attack's metrics, equal to the summary
    steps = {s["eps"]: s for s in logged["history"] if "eps" in s}
    assert sorted(steps) == sorted({r["eps"] for r in rows})
    for r in rows:
        for key in ("robust_acc", "asr", "robust_acc_lo", "robust_acc_hi", "clean_auc", "adv_auc"):
            if r[key] is not None:
                assert same(steps[r["eps"]][f"{r['attack']}/{key}"], r[key]), (r["attack"], key)
                assert same(logged["summary"][f"{r['attack']}/eps={r['eps_label']}/{key}"], r[key])
    # the chart, the tables and the example grid are in the run, with their files
    media = {p.parent.name: p for p in (run_dir / "files" / "media").rglob("*") if p.is_file()}
    assert {"table", "images"} <= set(media)
    media_step = logged["history"][-1]  # W&B stores media and tables as flattened references
    assert media_step["examples/_type"] == "image-file" and media_step["examples/width"] > 28
    assert media_step["per_sample/_type"] == "table-file" and media_step["per_sample/nrows"] == 24 * 3 * 2
    assert media_step["summary_table/nrows"] == len(rows)
    chart = json.loads((run_dir / "files" / media_step["robust_acc_vs_eps_table/path"]).read_text())
    assert len(chart["data"]) == len(rows)  # one point per attack and epsilon
    table = json.loads((run_dir / "files" / media_step["per_sample/path"]).read_text())
    assert "adv_pred" in table["columns"] and len(table["data"]) == 24 * 3 * 2


@pytest.mark.slow
def test_runs_of_one_sweep_share_a_group(trained_breast, real_root, tmp_path):
    proc = attack(trained_breast[2], tmp_path, real_root, "attack=fgsm,pgd_linf", "attack.epsilons=[2/255]",
                  "dataset.n_examples=16", "logger=wandb", multirun=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [read_offline_run(d)["run"] for d in tmp_path.rglob("wandb/offline-run-*")]
    assert len(runs) == 2
    assert runs[0]["group"] == runs[1]["group"] and runs[0]["group"].startswith("sweep-")
