"""Sweeps on a real SLURM cluster (slurmctld + slurmd + munged; SLURM/local_cluster.sh starts one).

Every test submits real jobs through ``hydra/launcher=slurm`` (submitit) and checks what landed: leaderboard
rows, the zoo, the jobs' status files, the sweep summary. ``.ci/run`` starts the cluster with
MaxArraySize=3, so the 4-job sweep is split into two arrays. Without a cluster these tests skip, except
under CI=true, where a missing cluster is a failure.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.leaderboard import read_rows
from bench.sweep.slurm import max_array_size
from bench.sweep.status import JOBS_FILE, read_status

REPO = Path(__file__).resolve().parents[1]
TINY = ["logger=none", "dataset.n_examples=16", "train.epochs=1", "train.n_train=32", "eval.model_form=torch_eager",
        "attack=fgsm"]
LAUNCHER = ["hydra.launcher.mem_gb=1", "hydra.launcher.cpus_per_task=1", "hydra.launcher.gpus_per_node=0",
            "hydra.launcher.timeout_min=30", "hydra.launcher.poll_s=1"]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]  # one one-node cluster: its tests run in turn


def _cluster_answers() -> bool:
    if not shutil.which("sbatch") or not os.environ.get("SLURM_CONF"):
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="module", autouse=True)
def cluster() -> None:
    if _cluster_answers():
        return
    message = ("no SLURM cluster answers (sbatch on PATH, SLURM_CONF set, sinfo working): start one with "
               "`sudo bash SLURM/local_cluster.sh start && source /tmp/medbench-slurm/slurm.env`")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; .ci/run starts it before the tests")
    pytest.skip(message)


def sweep(tmp: Path, *overrides: str, zoo: Path | None = None, env: dict | None = None, timeout: int = 900,
          background: bool = False):
    """``scripts/attack.py -m hydra/launcher=slurm`` into ``tmp`` (sweep folder, outputs and, unless given, zoo)."""
    cmd = [sys.executable, "scripts/attack.py", "-m", "hydra/launcher=slurm", *LAUNCHER,
           f"hydra.sweep.dir={tmp / 'sweep'}", f"paths.output_root={tmp / 'out'}", f"paths.zoo_dir={zoo or tmp / 'zoo'}",
           *TINY, *overrides]
    full_env = {**os.environ, **(env or {})}
    if background:
        return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)


def rows_of(tmp: Path) -> list[dict[str, str]]:
    return read_rows(tmp / "out" / "leaderboard" / "breastmnist_28_linf.csv")


def jobs_of(tmp: Path) -> dict[str, dict]:
    return json.loads((tmp / "sweep" / JOBS_FILE).read_text())


def logs_of(tmp: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted((tmp / "sweep" / ".submitit").glob("*/*_log.*")))


def status_command(tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/sweep_status.py", str(tmp / "sweep")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def wait_for(predicate, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while not predicate():
        if time.time() > end:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def shared_zoo(tmp_path_factory) -> Path:
    """A zoo for the tests after the first (they are about jobs, not training)."""
    return tmp_path_factory.mktemp("zoo")


def test_a_fresh_sweep_trains_the_missing_model_once_writes_every_row_and_resubmitting_runs_nothing(tmp_path, shared_zoo):
    result = sweep(tmp_path, "attack=fgsm,pgd_linf", "attack.epsilons=[1/255],[2/255]", zoo=shared_zoo)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    rows = rows_of(tmp_path)
    assert sorted((r["attack"], r["eps_label"]) for r in rows) == [
        ("fgsm", "1/255"), ("fgsm", "2/255"), ("pgd_linf", "1/255"), ("pgd_linf", "2/255")]
    assert all(r["n"] == "16" for r in rows)
    assert len(list(shared_zoo.glob("*/*.safetensors"))) == 1
    assert logs_of(tmp_path).count("no trained model with these settings") == 1, "the model must be trained once"

    jobs = jobs_of(tmp_path)
    arrays = {job["job_ids"][0].split("_")[0] for job in jobs.values()}
    assert len(arrays) == math.ceil(4 / max_array_size()), "a sweep larger than MaxArraySize is split into arrays"
    if os.environ.get("CI", "").lower() == "true":
        assert max_array_size() < 4, ".ci/run starts the cluster with MaxArraySize=3 so the split is exercised"

    summary = status_command(tmp_path)
    assert summary.returncode == 0 and "4 done" in summary.stdout, summary.stdout + summary.stderr
    assert summary.stdout.count("row: breastmnist_28") == 4

    again = sweep(tmp_path, "attack=fgsm,pgd_linf", "attack.epsilons=[1/255],[2/255]", zoo=shared_zoo)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "nothing to submit: all 4 job(s)" in again.stdout + again.stderr
    assert jobs_of(tmp_path) == jobs, "re-submitting a finished sweep submits no job"
    assert len(rows_of(tmp_path)) == 4


def release_when_requeued(job_id: str, released: threading.Event, timeout: float = 300) -> None:
    """Once ``job_id`` is pending on its requeue hold, move its start time to now (``scontrol update``)."""
    end = time.time() + timeout
    while time.time() < end and not released.is_set():
        state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True, text=True,
                               timeout=30).stdout.split()
        if state[:2] == ["PENDING", "BeginTime"]:
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True, timeout=30)
            released.set()
        time.sleep(0.5)


def test_a_preempted_job_is_requeued_and_resumes_to_the_uninterrupted_result(tmp_path, shared_zoo):
    many_batches = ["attack=pgd_linf", "attack.epsilons=[2/255]", "attack.params.steps=60", "dataset.n_examples=40",
                    "eval.batch_size=8"]
    proc = sweep(tmp_path, *many_batches, zoo=shared_zoo, background=True)
    try:
        batches = tmp_path / "out" / "records"
        wait_for(lambda: any(batches.glob("**/batches/*.jsonl")), 600, "the job's first batch of records")
        job_id = jobs_of(tmp_path)["0"]["job_ids"][-1]
        done_before = len(list(batches.glob("**/batches/*.jsonl")))
        # what SLURM sends before pre-emption or the time limit (submitit asks for --signal=USR2@<delay>)
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=60)
        # SLURM holds a requeued job for 120 s (BeginTime) and starts it at its next scheduling pass (up to a minute
        # later): cluster policy, not what is tested here, so the requeued job is made eligible at once
        released = threading.Event()
        threading.Thread(target=release_when_requeued, args=(job_id, released), daemon=True).start()
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    assert 0 < done_before < 5, "the signal must arrive mid-run for this test to mean anything"
    status = read_status(tmp_path / "sweep" / "0")
    assert status["state"] == "done" and status["attempts"] == 2, status
    assert "this job is preempted" in logs_of(tmp_path) and "Requeued job" in logs_of(tmp_path)
    assert len(list(batches.glob("**/batches/*.jsonl"))) == 5

    # the same evaluation without interruption, in this process's own folders, from the same zoo model
    plain = subprocess.run([sys.executable, "scripts/attack.py", f"paths.output_root={tmp_path / 'plain'}",
                            f"paths.zoo_dir={shared_zoo}", *TINY, *many_batches],
                           cwd=REPO, capture_output=True, text=True, timeout=900)
    assert plain.returncode == 0, plain.stdout[-3000:] + plain.stderr[-3000:]
    [interrupted] = rows_of(tmp_path)
    [uninterrupted] = read_rows(tmp_path / "plain" / "leaderboard" / "breastmnist_28_linf.csv")
    for column in ("robust_acc", "clean_acc", "asr", "linf_mean", "n"):
        assert interrupted[column] == uninterrupted[column], column


def test_a_crashing_job_is_reported_failed_and_the_other_rows_are_intact(tmp_path, shared_zoo):
    result = sweep(tmp_path, "attack.epsilons=[1/255]", f"checkpoint=null,{tmp_path / 'missing.safetensors'}",
                   zoo=shared_zoo)
    assert result.returncode != 0, "a sweep with a failed job must not exit as a success"
    output = result.stdout + result.stderr
    assert "1 done, 1 failed" in output or "1 failed" in output and "1 done" in output, output[-3000:]
    summary = status_command(tmp_path)
    assert summary.returncode == 1
    failed_line = summary.stdout.split("failed ", 1)[1]
    assert "missing.safetensors" in failed_line.splitlines()[1], summary.stdout
    [row] = rows_of(tmp_path)
    assert row["attack"] == "fgsm" and row["eps_label"] == "1/255"


def test_a_job_killed_before_its_result_is_reported_lost_and_the_launcher_does_not_hang(tmp_path, shared_zoo):
    # a cluster whose accounting never answers: submitit then sees the job's state as UNKNOWN forever
    silent = tmp_path / "bin"
    silent.mkdir()
    (silent / "sacct").write_text("#!/bin/sh\necho 'sacct: error: Slurm accounting storage is disabled' >&2\nexit 1\n")
    (silent / "sacct").chmod(0o755)
    env = {"PATH": f"{silent}:{os.environ['PATH']}"}
    proc = sweep(tmp_path, "attack=pgd_linf", "attack.params.steps=200", "attack.epsilons=[2/255]",
                 "hydra.launcher.lost_after_s=5", zoo=shared_zoo, env=env, background=True)
    try:
        wait_for(lambda: (read_status(tmp_path / "sweep" / "0") or {}).get("state") == "running", 600, "the job to start")
        job_id = jobs_of(tmp_path)["0"]["job_ids"][-1]
        subprocess.run(["scancel", job_id], check=True, timeout=60)  # SIGTERM (submitit ignores it), then SIGKILL
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.kill()
            pytest.fail("the launcher kept waiting for a job that will never write a result")
    assert proc.returncode != 0
    assert "is lost" in out and "1 lost" in out, out[-3000:]
    assert rows_of(tmp_path) == []


def test_shards_of_one_evaluation_merge_into_one_row(tmp_path, shared_zoo):
    result = sweep(tmp_path, "attack.epsilons=[1/255]", "dataset.n_examples=32", "eval.batch_size=8",
                   "eval.num_shards=2", "eval.shard=0,1", zoo=shared_zoo)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [row] = rows_of(tmp_path)
    assert row["n"] == "32"
    records = [p for p in (tmp_path / "out" / "records").glob("*/*/*") if (p / "meta.json").exists()]
    assert len(records) == 1 and len(list((records[0] / "batches").glob("*.jsonl"))) == 4


def test_a_partition_that_does_not_exist_is_refused_with_sbatchs_message_and_nothing_submitted(tmp_path, shared_zoo):
    result = sweep(tmp_path, "attack.epsilons=[1/255]", "hydra.launcher.partition=no_such_partition", zoo=shared_zoo,
                   timeout=300)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "the cluster refused the sweep" in output and "invalid partition" in output.lower(), output[-3000:]
    assert not (tmp_path / "sweep" / JOBS_FILE).exists()


def test_a_sweep_that_does_not_compose_names_the_override_before_anything_is_submitted(tmp_path, shared_zoo):
    result = sweep(tmp_path, "attack=fgsm,no_such_attack", zoo=shared_zoo, timeout=300)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "no_such_attack" in output, output[-3000:]
    assert not (tmp_path / "sweep" / ".submitit").exists() and not (tmp_path / "sweep" / JOBS_FILE).exists()
