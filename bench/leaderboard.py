"""Leaderboard CSVs: one file per track, appended atomically under a lock, idempotently.

A row is keyed by (config_hash, model, attack, norm, eps): re-running the same
configuration replaces its rows instead of adding duplicates. The file is
rewritten to a temporary file and renamed over the old one, so a crash
mid-write leaves the previous CSV intact, and a hand-edited file with the
wrong schema is refused (naming the column and line) without being touched.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from filelock import FileLock

from bench.atomic import atomic_write
from bench.errors import BenchError

COLUMNS = (
    # what was attacked
    "date", "dataset", "size", "model", "defense", "arch", "recipe",
    # how
    "attack", "kind", "norm", "eps", "eps_label", "n", "seed",
    # metrics (../shared/DESIGN.md); *_lo/*_hi are 95% bootstrap intervals
    "clean_acc", "robust_acc", "robust_acc_lo", "robust_acc_hi", "asr", "asr_lo", "asr_hi",
    "clean_auc", "adv_auc", "missed_disease_rate", "false_alarm_rate", "per_class_robust_acc",
    "linf_mean", "linf_median", "l2_mean", "l2_median", "l0_mean", "l0_median",
    "queries_mean", "queries_median", "forwards_per_sample", "backwards_per_sample", "seconds",
    # trust
    "flags",
    # provenance
    "tag", "config_hash", "weights_sha256", "git_commit", "versions",
)
KEY = ("config_hash", "model", "attack", "norm", "eps")


class LeaderboardSchemaError(BenchError):
    """The CSV on disk does not have the leaderboard's columns."""


def track_name(dataset: str, size: int, norm: str) -> str:
    return f"{dataset}_{size}_{norm}"


def track_path(leaderboard_dir: str | Path, dataset: str, size: int, norm: str) -> Path:
    return Path(leaderboard_dir) / f"{track_name(dataset, size, norm)}.csv"


def _format(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """Read and validate a leaderboard CSV; raise LeaderboardSchemaError naming column and line."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return []
        if tuple(header) != COLUMNS:
            for i, (want, got) in enumerate(zip(COLUMNS, header + [""] * len(COLUMNS))):
                if want != got:
                    raise LeaderboardSchemaError(
                        f"{path}: line 1, column {i + 1} is {got!r} but the leaderboard expects {want!r} "
                        f"(expected columns: {', '.join(COLUMNS)}). Restore the header; the file was left unchanged."
                    )
            raise LeaderboardSchemaError(
                f"{path}: line 1 has {len(header)} columns, expected {len(COLUMNS)}; extra: {header[len(COLUMNS):]}."
            )
        rows = []
        for line_no, values in enumerate(reader, start=2):
            if len(values) != len(COLUMNS):
                raise LeaderboardSchemaError(
                    f"{path}: line {line_no} has {len(values)} fields, expected {len(COLUMNS)} "
                    f"({', '.join(COLUMNS)}). Fix or delete that line; the file was left unchanged."
                )
            rows.append(dict(zip(COLUMNS, values)))
    return rows


def _key(row: Mapping[str, object]) -> tuple[str, ...]:
    return tuple(_format(row.get(k)) for k in KEY)


def upsert_rows(path: str | Path, new_rows: Iterable[Mapping[str, object]]) -> Path:
    """Add ``new_rows`` to the CSV at ``path``, replacing rows with the same key. Atomic and locked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = [{c: _format(r.get(c)) for c in COLUMNS} for r in new_rows]
    with FileLock(str(path) + ".lock", timeout=120):
        existing = read_rows(path)
        replaced = {_key(r) for r in new}
        kept = [r for r in existing if _key(r) not in replaced]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept + new)
        atomic_write(path, buffer.getvalue())
    return path
