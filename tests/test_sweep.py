"""Sweeps without a cluster: the local launcher, the jobs' status files, the summary, the locks.

The same behaviour on a real SLURM cluster (pre-emption, lost jobs, array splitting) is in test_slurm.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import ConfigError
from bench.leaderboard import read_rows
from bench.locks import shared_lock
from bench.sweep.launcher import chunks
from bench.sweep.status import JOBS_FILE, job_status, read_status, write_status
from bench.sweep.summary import format_summary, summarize

REPO = Path(__file__).resolve().parents[1]


def test_a_job_that_returns_is_done_with_its_rows_and_one_that_raises_is_failed_with_its_first_line(tmp_path):
    with job_status(tmp_path / "a", ["attack=fgsm"]) as rows:
        rows.append({"dataset": "breastmnist", "size": 28, "model": "m", "attack": "fgsm", "eps": 0.01,
                     "robust_acc": 0.5, "config_hash": "not shown"})
    done = read_status(tmp_path / "a")
    assert done["state"] == "done" and done["attempts"] == 1 and done["overrides"] == ["attack=fgsm"]
    assert done["rows"] == [{"dataset": "breastmnist", "size": 28, "model": "m", "attack": "fgsm", "eps": 0.01,
                             "robust_acc": 0.5}]

    with pytest.raises(SystemExit), job_status(tmp_path / "b", ["attack=x"]):
        raise SystemExit("error: no checkpoint 'x.safetensors'\nsecond line")
    failed = read_status(tmp_path / "b")
    assert failed["state"] == "failed" and failed["error"] == "error: no checkpoint 'x.safetensors'"

    with pytest.raises(RuntimeError), job_status(tmp_path / "c", []):
        raise RuntimeError("boom")
    assert read_status(tmp_path / "c")["error"] == "RuntimeError: boom"
    assert "Traceback" in read_status(tmp_path / "c")["traceback"]


def test_the_exit_submitit_makes_after_requeueing_on_sigusr2_is_recorded_as_requeued_not_failed(tmp_path):
    def submitit_like_handler(signum, frame):  # what submitit does: checkpoint, `scontrol requeue`, sys.exit(-1)
        raise SystemExit(-1)

    previous = signal.signal(signal.SIGUSR2, submitit_like_handler)
    try:
        with pytest.raises(SystemExit), job_status(tmp_path, ["attack=fgsm"]):
            os.kill(os.getpid(), signal.SIGUSR2)
        assert read_status(tmp_path)["state"] == "requeued"
        assert signal.getsignal(signal.SIGUSR2) is submitit_like_handler, "the job's own handler is restored"
        with job_status(tmp_path, ["attack=fgsm"]):  # the requeued attempt
            pass
        assert read_status(tmp_path)["state"] == "done" and read_status(tmp_path)["attempts"] == 2
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_the_summary_tells_done_failed_and_lost_local_jobs_apart(tmp_path):
    jobs = {}
    for num, state in enumerate(["done", "failed", "running"]):
        folder = tmp_path / str(num)
        write_status(folder, "running", overrides=[f"attack=a{num}"])
        if state == "done":
            write_status(folder, "done", rows=[{"dataset": "breastmnist", "size": 28, "model": "m", "attack": "a0",
                                                "eps": 0.1, "robust_acc": 0.25}])
        elif state == "failed":
            write_status(folder, "failed", error="error: unknown attack 'a1'")
        else:  # a process that is gone without writing its end
            status = json.loads((folder / "medbench_status.json").read_text())
            status["pid"] = 2**22 + 7  # beyond pid_max defaults: no such process
            (folder / "medbench_status.json").write_text(json.dumps(status))
        jobs[str(num)] = {"overrides": [f"attack=a{num}"], "dir": str(folder), "job_ids": [str(num)], "executor": "local"}
    (tmp_path / JOBS_FILE).write_text(json.dumps(jobs))
    summary = summarize(tmp_path)
    assert [j.state for j in summary] == ["done", "failed", "lost"]
    text = format_summary(summary)
    assert text.splitlines()[0] == "sweep summary: 1 done, 1 failed, 1 lost"
    assert "error: unknown attack 'a1'" in text and "robust_acc=0.25" in text

    status = subprocess.run([sys.executable, "scripts/sweep_status.py", str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 1 and "1 lost" in status.stdout


def test_arrays_are_cut_to_the_size_asked_for():
    assert [len(c) for c in chunks(list(range(7)), 3)] == [3, 3, 1]
    assert [len(c) for c in chunks(list(range(3)), 1001)] == [3]


def test_an_unknown_lock_kind_names_the_choices(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDBENCH_LOCK", "nfs-magic")
    with pytest.raises(ConfigError, match="'nfs-magic'.*flock, soft"):
        shared_lock(str(tmp_path / "x.lock"))
    monkeypatch.setenv("MEDBENCH_LOCK", "soft")
    with shared_lock(str(tmp_path / "x.lock")):
        assert (tmp_path / "x.lock").exists()
    assert not (tmp_path / "x.lock").exists()


@pytest.mark.slow
def test_the_local_launcher_runs_the_sweep_and_a_finished_sweep_submits_nothing(tmp_path, real_root):
    cmd = [sys.executable, "scripts/attack.py", "-m", "hydra/launcher=local", "hydra.launcher.array_parallelism=2",
           f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.output_root={tmp_path / 'out'}",
           f"paths.zoo_dir={tmp_path / 'zoo'}", "logger=none", "dataset.n_examples=16", "train.epochs=1",
           "train.n_train=32", "eval.model_form=torch_eager", "attack=fgsm", "attack.epsilons=[1/255],[2/255]"]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "sweep summary: 2 done" in first.stdout
    rows = read_rows(tmp_path / "out" / "leaderboard" / "breastmnist_28_linf.csv")
    assert sorted(r["eps_label"] for r in rows) == ["1/255", "2/255"]
    assert len(list((tmp_path / "zoo").glob("*/*.safetensors"))) == 1

    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "nothing to submit: all 2 job(s)" in again.stdout + again.stderr
