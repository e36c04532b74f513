"""Per-sample records: killed runs resume to the same numbers, shards merge, mismatched records are refused."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.records import RecordMismatchError, RecordSet, batch_ranges, merge, shard_ranges
from tests.conftest import REPO

# 48 samples in 6 batches; the kill lands right after the second batch file appears
ATTACK = ("attack=pgd_linf", "attack.params.steps=30", "attack.epsilons=[1/255,4/255]",
          "dataset.n_examples=48", "eval.batch_size=8", "logger=none")
VOLATILE = {"seconds", "date", "git_commit"}


def command(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "attack.py"), *ATTACK, f"checkpoint={checkpoint}",
            f"paths.output_root={out}", f"paths.leaderboard_dir={out / 'leaderboard'}", *extra]


def run(cmd: list[str], root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEDMNIST_ROOT": str(root)}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def stable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def summary(out: Path) -> list[dict]:
    (path,) = list((out / "records").rglob("summary.json"))
    return json.loads(path.read_text())


def record_lines(folder: Path) -> list[dict]:
    lines = []
    for path in sorted(folder.rglob("batches/*.jsonl")):
        lines += [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]
    return lines


@pytest.fixture(scope="module")
def uninterrupted(trained_breast, real_root, tmp_path_factory):
    """The reference: the same evaluation run once, start to finish."""
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = run(command(trained_breast[2], out), real_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_run_resumes_from_its_last_batch_with_the_same_numbers(sig, trained_breast, real_root, uninterrupted, tmp_path):
    cmd = command(trained_breast[2], tmp_path)
    env = {**os.environ, "MEDMNIST_ROOT": str(real_root)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and len(list(tmp_path.rglob("batches/*.jsonl"))) < 2:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    done_before = len(list(tmp_path.rglob("batches/*.jsonl")))
    assert 2 <= done_before < 6, "the kill must land mid-run for this test to mean anything"
    assert not list(tmp_path.rglob("summary.json")) and not (tmp_path / "leaderboard").exists()

    resumed = run(cmd, real_root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming: {done_before} of 6 batches" in resumed.stdout
    assert stable(summary(tmp_path)) == stable(summary(uninterrupted))
    assert record_lines(tmp_path / "records") == record_lines(uninterrupted / "records")


@pytest.mark.slow
def test_shards_in_separate_folders_merge_into_the_uninterrupted_result(trained_breast, real_root, uninterrupted, tmp_path):
    folders = [tmp_path / f"shard{k}" for k in range(3)]
    for k, folder in enumerate(folders):
        proc = run(command(trained_breast[2], tmp_path, "eval.num_shards=3", f"eval.shard={k}", f"records.dir={folder}"), real_root)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "shard done" in proc.stdout  # no shard alone holds every batch
    assert not (tmp_path / "leaderboard").exists()
    merged = tmp_path / "merged"
    proc = run([sys.executable, str(REPO / "scripts" / "merge_records.py"), *map(str, folders), "--into", str(merged)], real_root)
    assert proc.returncode == 0 and "6 batches" in proc.stdout, proc.stderr
    final = run(command(trained_breast[2], tmp_path, f"records.dir={merged}"), real_root)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "0 batch(es) attacked" in final.stdout
    rows = json.loads((merged / "summary.json").read_text())
    assert stable(rows) == stable(summary(uninterrupted))
    assert (tmp_path / "leaderboard" / "breastmnist_28_linf.csv").exists()


@pytest.mark.slow
def test_records_of_another_configuration_are_refused(trained_breast, real_root, uninterrupted, tmp_path):
    (folder,) = [p.parent for p in (uninterrupted / "records").rglob("meta.json")]
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    proc = run(command(trained_breast[2], tmp_path, "attack.params.steps=31", f"records.dir={folder}"), real_root)
    assert proc.returncode != 0
    message = proc.stderr + proc.stdout
    assert "different configuration" in message and "steps: records have 30, this run has 31" in message
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_shards_are_contiguous_whole_batches_covering_everything():
    batches = batch_ranges(100, 8)
    shards = [shard_ranges(100, 8, 3, k) for k in range(3)]
    assert [b for shard in shards for b in shard] == batches
    with pytest.raises(Exception, match="eval.shard"):
        shard_ranges(100, 8, 3, 3)


def test_a_crash_mid_write_leaves_earlier_batches_and_no_partial_file(tmp_path, monkeypatch):
    records = RecordSet.open(tmp_path / "r", {"config": 1})
    records.write_batch(0, 2, [{"index": 0}, {"index": 1}])
    before = (tmp_path / "r" / "batches").iterdir().__next__().read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        records.write_batch(2, 4, [{"index": 2}, {"index": 3}])
    monkeypatch.undo()
    assert records.finished_batches() == [(0, 2)]
    assert records.batch_path(0, 2).read_bytes() == before
    assert [p.name for p in (tmp_path / "r" / "batches").iterdir()] == [records.batch_path(0, 2).name]


def test_reopening_with_another_fingerprint_names_the_difference(tmp_path):
    RecordSet.open(tmp_path, {"config": {"eps": 1}, "weights_sha256": "a"})
    with pytest.raises(RecordMismatchError, match=r"config.eps: records have 1, this run has 2"):
        RecordSet.open(tmp_path, {"config": {"eps": 2}, "weights_sha256": "a"})


def test_merge_refuses_different_configurations(tmp_path):
    a = RecordSet.open(tmp_path / "a", {"config": 1})
    b = RecordSet.open(tmp_path / "b", {"config": 2})
    a.write_batch(0, 1, [{"index": 0}])
    b.write_batch(1, 2, [{"index": 1}])
    with pytest.raises(RecordMismatchError, match="different configurations"):
        merge([a.root, b.root], tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_a_defense_whose_adaptive_attacks_or_gradient_changed_does_not_resume_into_the_old_batches(tmp_path):
    """The adaptive attacks and BPDA's gradient come from the defense's declaration in code, not from the config:
    records written with others (an older version's) are refused, naming the difference, instead of mixed in."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from bench.experiment import open_records

    cfg = OmegaConf.create({"eval": {"batch_size": 8}, "records": {"dir": str(tmp_path / "r")}, "seed": 0})
    import torch.nn as nn

    from bench.defenses import DEFENSES

    jpeg = DEFENSES["jpeg"](nn.Identity())
    prep = SimpleNamespace(card=SimpleNamespace(sha256="w"), split=[0] * 8, adaptive=("bpda_apgd_ce",), model=jpeg)
    open_records(cfg, prep).write_batch(0, 8, [{"index": i} for i in range(8)])
    assert open_records(cfg, prep).finished_batches() == [(0, 8)]  # same set: resumes
    newer = SimpleNamespace(**{**vars(prep), "adaptive": ("bpda_apgd_ce", "transfer_backbone")})
    with pytest.raises(RecordMismatchError, match="adaptive"):
        open_records(cfg, newer)
    identity_bpda = DEFENSES["bit_depth"](nn.Identity())  # same attacks, another declared BPDA gradient
    with pytest.raises(RecordMismatchError, match="declaration.gradient"):
        open_records(cfg, SimpleNamespace(**{**vars(prep), "model": identity_bpda}))
