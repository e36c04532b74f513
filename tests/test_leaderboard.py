"""Leaderboard CSVs: idempotent upserts, concurrent writers, schema errors that leave the file alone."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from bench.leaderboard import COLUMNS, LeaderboardSchemaError, read_rows, upsert_rows


def row(**kw):
    base = {c: "" for c in COLUMNS}
    base.update(dataset="breastmnist", size=28, model="m", attack="pgd", norm="linf", eps=0.01,
                config_hash="abc", robust_acc=0.5, n=10)
    base.update(kw)
    return base


def test_rerunning_a_configuration_replaces_its_row(tmp_path):
    path = tmp_path / "t.csv"
    upsert_rows(path, [row(robust_acc=0.5), row(eps=0.02, robust_acc=0.4)])
    upsert_rows(path, [row(robust_acc=0.45)])
    rows = read_rows(path)
    assert len(rows) == 2
    assert {(r["eps"], r["robust_acc"]) for r in rows} == {("0.01", "0.45"), ("0.02", "0.4")}


def _append(args):
    path, i = args
    upsert_rows(path, [row(config_hash=f"h{i}", robust_acc=i / 10)])


def _append_shared_and_own(args):
    path, i = args
    upsert_rows(path, [row(config_hash="shared", robust_acc=0.5), row(config_hash=f"h{i}", robust_acc=i / 10)])


def test_eight_processes_upserting_the_same_key_leave_one_row(tmp_path):
    path = tmp_path / "t.csv"
    with mp.get_context("spawn").Pool(8) as pool:
        pool.map(_append_shared_and_own, [(path, i) for i in range(8)])
    hashes = sorted(r["config_hash"] for r in read_rows(path))
    assert hashes == sorted(["shared"] + [f"h{i}" for i in range(8)])


def test_eight_processes_appending_lose_nothing(tmp_path):
    path = tmp_path / "t.csv"
    with mp.get_context("spawn").Pool(8) as pool:
        pool.map(_append, [(path, i) for i in range(8)])
    rows = read_rows(path)
    assert sorted(r["config_hash"] for r in rows) == [f"h{i}" for i in range(8)]


def test_wrong_schema_names_column_and_line_and_leaves_file(tmp_path):
    path = tmp_path / "t.csv"
    upsert_rows(path, [row()])
    text = path.read_text().replace("robust_acc,", "robust_accuracy,", 1)
    path.write_text(text)
    with pytest.raises(LeaderboardSchemaError, match=r"line 1, column 16 is 'robust_accuracy'.*'robust_acc'"):
        upsert_rows(path, [row(config_hash="new")])
    assert path.read_text() == text


def test_short_data_line_is_named(tmp_path):
    path = tmp_path / "t.csv"
    upsert_rows(path, [row()])
    with open(path, "a") as fh:
        fh.write("only,three,fields\n")
    before = path.read_text()
    with pytest.raises(LeaderboardSchemaError, match="line 3 has 3 fields"):
        upsert_rows(path, [row(config_hash="new")])
    assert path.read_text() == before


def test_a_full_disk_mid_write_leaves_the_previous_csv(tmp_path, monkeypatch):
    import errno
    import os

    path = tmp_path / "t.csv"
    upsert_rows(path, [row()])
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        upsert_rows(path, [row(config_hash="new")])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["t.csv"]
