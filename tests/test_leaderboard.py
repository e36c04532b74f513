"""Leaderboard CSVs: idempotent upserts, concurrent writers, every cell validated on read, older files upgraded."""

from __future__ import annotations

import csv
import multiprocessing as mp

import pytest

from bench.leaderboard import COLUMNS, SCHEMA, LeaderboardSchemaError, read_rows, upsert_rows
from tests.conftest import board_row


def row(**kw):
    return board_row(**{"model": "m", "attack": "pgd", "kind": "gradient", "eps": 0.01, "config_hash": "abc",
                        "robust_acc": 0.5, "n": 10, **kw})


def test_rerunning_a_configuration_replaces_its_row(tmp_path):
    path = tmp_path / "t.csv"
    upsert_rows(path, [row(robust_acc=0.5), row(eps=0.02, robust_acc=0.4)])
    upsert_rows(path, [row(robust_acc=0.45)])
    rows = read_rows(path)
    assert len(rows) == 2
    assert {(r["eps"], r["robust_acc"]) for r in rows} == {("0.01", "0.45"), ("0.02", "0.4")}
    # a replaced row keeps its line: re-promoting the same rows leaves the file byte for byte as it was
    assert [r["eps"] for r in rows] == ["0.01", "0.02"]
    before = path.read_bytes()
    upsert_rows(path, [row(robust_acc=0.45)])
    assert path.read_bytes() == before


def test_a_model_retrained_differently_does_not_replace_the_rows_of_its_namesake(tmp_path):
    path = tmp_path / "t.csv"
    upsert_rows(path, [row(weights_sha256="aa" * 32, robust_acc=0.5)])
    upsert_rows(path, [row(weights_sha256="bb" * 32, robust_acc=0.1)])
    assert sorted(r["robust_acc"] for r in read_rows(path)) == ["0.1", "0.5"]


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
    column = COLUMNS.index("robust_acc") + 1
    with pytest.raises(LeaderboardSchemaError, match=rf"line 1, column {column} is 'robust_accuracy'.*'robust_acc'"):
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


def _corrupt(path, line: int, column: str, value: str) -> str:
    """Set one cell of the CSV at ``path`` (line 1 is the header) and return the file's new text."""
    with open(path, newline="") as fh:
        table = list(csv.reader(fh))
    table[line - 1][table[0].index(column)] = value
    with open(path, "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(table)
    return path.read_text()


@pytest.mark.parametrize(
    "column, value, problem",
    [
        ("robust_acc", "notanumber", "not a number"),
        ("clean_acc", "1.7", r"outside \[0, 1\]"),
        ("robust_acc_lo", "-0.2", r"outside \[0, 1\]"),
        ("n", "12.5", "not a whole number"),
        ("eps", "eight", "not a number"),
        ("l2_median", "nan", "not a finite number"),
        ("weights_sha256", "", "empty, but every row must record it"),
        ("git_commit", "", "empty, but every row must record it"),
        ("flags", "zero grad!", "not identifiers"),
    ],
)
def test_a_bad_cell_is_refused_with_file_line_and_column_and_the_file_is_unchanged(tmp_path, column, value, problem):
    path = tmp_path / "breastmnist_28_linf.csv"
    upsert_rows(path, [row(), row(eps=0.02)])
    text = _corrupt(path, 3, column, value)
    where = rf"breastmnist_28_linf.csv: line 3, column {COLUMNS.index(column) + 1} \({column}\) is {value!r}: .*{problem}"
    with pytest.raises(LeaderboardSchemaError, match=where):
        read_rows(path)
    with pytest.raises(LeaderboardSchemaError, match=where):
        upsert_rows(path, [row(config_hash="new")])
    assert path.read_text() == text


def test_a_bad_new_row_is_refused_before_anything_is_written(tmp_path):
    path = tmp_path / "t.csv"
    upsert_rows(path, [row()])
    before = path.read_bytes()
    with pytest.raises(LeaderboardSchemaError, match="column robust_acc is '1.5'"):
        upsert_rows(path, [row(config_hash="new", robust_acc=1.5)])
    with pytest.raises(LeaderboardSchemaError, match="column split is ''"):
        upsert_rows(path, [row(config_hash="new", split="")])
    assert path.read_bytes() == before


def test_a_file_from_the_first_schema_is_read_and_upgraded_on_its_next_write(tmp_path):
    """Columns added since version 1 (split, train, battery, ...) read as empty, and the next write adds them."""
    first = [c.name for c in SCHEMA if c.since == 1]
    added = [c.name for c in SCHEMA if c.since > 1]
    assert added, "this test needs a column added after version 1"
    path = tmp_path / "old.csv"
    old = row()
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=first, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerow(old)
    (read,) = read_rows(path)
    assert all(read[c] == "" for c in added) and read["robust_acc"] == "0.5"
    upsert_rows(path, [row(config_hash="new")])
    with open(path, newline="") as fh:
        assert tuple(next(csv.reader(fh))) == COLUMNS
    assert sorted(r["config_hash"] for r in read_rows(path)) == ["abc", "new"]


def test_a_missing_first_version_column_is_refused(tmp_path):
    path = tmp_path / "t.csv"
    upsert_rows(path, [row()])
    with open(path, newline="") as fh:
        table = list(csv.reader(fh))
    i = table[0].index("weights_sha256")
    with open(path, "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows([r[:i] + r[i + 1:] for r in table])
    with pytest.raises(LeaderboardSchemaError, match="lacks the column.*'weights_sha256'"):
        read_rows(path)


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
