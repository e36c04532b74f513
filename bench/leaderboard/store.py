"""Leaderboard CSVs: one file per track, read with every cell validated, upserted atomically under a lock.

A row is keyed by :data:`~bench.leaderboard.schema.KEY`: re-running the same
evaluation replaces its rows instead of adding duplicates. The file is rewritten
to a temporary file and renamed over the old one, so a crash mid-write leaves the
previous CSV intact; a file with a bad header or a bad cell is refused (naming the
line and column) without being touched; a file written by an older medbench is
upgraded to the current columns on its next write.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path


from bench.atomic import atomic_write
from bench.leaderboard.schema import COLUMNS, KEY, LeaderboardSchemaError, check_header, upgrade_row, validate_row
from bench.locks import shared_lock


def track_name(dataset: str, size: int | str, norm: str) -> str:
    return f"{dataset}_{size}_{norm}"


def track_path(leaderboard_dir: str | Path, dataset: str, size: int | str, norm: str) -> Path:
    return Path(leaderboard_dir) / f"{track_name(dataset, size, norm)}.csv"


def format_value(value: object) -> str:
    """How a value is stored: floats to 6 significant digits, NaN and None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def track_files(folder: str | Path) -> list[Path]:
    """The empirical track CSVs in a leaderboard folder (side tracks, certified and corruption, have their own schema)."""
    from bench.leaderboard.side_track import is_side_track_file

    return [p for p in sorted(Path(folder).glob("*.csv")) if not is_side_track_file(p)]


def read_checked_csv(path: str | Path, check_header: Callable[[list[str], str], object],
                     check_row: Callable[[list[str], list[str], str, int], dict[str, str]]) -> list[dict[str, str]]:
    """Rows of a CSV, the header and each line (numbered as an editor shows it) passed through the checkers.

    One reader for every leaderboard file kind (empirical tracks, the certified track), so each validates
    on read the same way: a missing or empty file has no rows, and a checker's error names file and line.
    """
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return []
        check_header(header, str(path))
        return [check_row(header, values, str(path), line) for line, values in enumerate(reader, start=2)]


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """Read, validate and upgrade a leaderboard CSV; LeaderboardSchemaError names the file, line and column."""
    return read_checked_csv(path, check_header, upgrade_row)


def replace_rows_locked(path: Path, new: list[dict[str, str]], columns: Sequence[str],
                        key: Callable[[Mapping[str, object]], tuple[str, ...]],
                        read: Callable[[Path], list[dict[str, str]]]) -> Path:
    """Write ``new`` (already validated) into the CSV at ``path``, replacing rows with the same key.

    The one write path of every leaderboard file kind: under a file lock (concurrent writers queue), the
    existing rows read and checked by ``read``, and the file replaced atomically, so a crash leaves it whole.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with shared_lock(str(path) + ".lock", timeout=120):
        incoming = {key(r): r for r in new}
        rows, placed = [], set()
        for old in read(path):  # a replaced row keeps its place, so re-promoting the same rows changes no line
            k = key(old)
            if k not in incoming:
                rows.append(old)
            elif k not in placed:
                rows.append(incoming[k])
                placed.add(k)
        rows += [r for r in new if key(r) not in placed]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(path, buffer.getvalue())
    return path


def row_key(row: Mapping[str, object]) -> tuple[str, ...]:
    return tuple(format_value(row.get(k)) for k in KEY)


def upsert_rows(path: str | Path, new_rows: Iterable[Mapping[str, object]], copied: bool = False) -> Path:
    """Add ``new_rows`` to the CSV at ``path``, replacing rows with the same key. Validated, atomic and locked.

    ``copied`` rows come from another leaderboard file (promotion): columns added after the version that
    wrote them may be empty, as they are when that file is read.
    """
    path = Path(path)
    new = [{c: format_value(r.get(c)) for c in COLUMNS} for r in new_rows]
    for i, row in enumerate(new):
        validate_row(row, f"{path}: new row {i + 1} ({row['model']} {row['attack']} eps={row['eps']})", new=not copied)
    return replace_rows_locked(path, new, COLUMNS, row_key, read_rows)


__all__ = ["LeaderboardSchemaError", "format_value", "read_rows", "replace_rows_locked", "row_key", "track_name", "track_path", "upsert_rows"]
