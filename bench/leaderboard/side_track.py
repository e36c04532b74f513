"""Tracks with their own row schema beside the empirical L-inf/L2 tracks: certified (smoothing), corruptions.

Each is one CSV per dataset and size, ``<flag>_<size>_<suffix>.csv`` in the same leaderboard folder,
in the long form (one row per evaluation and setting: a radius, a corruption and severity). A
:class:`SideTrack` holds what differs between them (file suffix, columns, key, the intervals to check)
and gives each the same behaviour: every cell validated on read against its declared column (a bad
header or cell is refused naming file, line and column, and the file is left as it was), new rows
validated before anything is written, and upserts by key under a lock through one atomic rewrite.
Readers of the empirical tracks skip these files (:func:`is_side_track_file`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.leaderboard.schema import Column, LeaderboardSchemaError
from bench.leaderboard.store import format_value, read_checked_csv, replace_rows_locked


def column(name: str, kind: str = "text", required: bool = True, help: str = "") -> Column:
    """A side-track column: every one is in the track's first version, most are required."""
    return Column(name, kind, required, 1, help)


def evaluated_columns(what: str, defense_help: str = "") -> tuple[Column, ...]:
    """The leading columns every side track shares: what was evaluated (``what``: certified, evaluated ...)."""
    return (
        column("date", help="when the row was written (UTC, ISO 8601)"),
        column("dataset"), column("size", "count"),
        column("split", help=f"the {what} split; n_examples < its size means a deterministic subset"),
        column("n", "count", help=f"samples {what} (the subset size, or the whole split)"),
        column("model", help="model name and training seed"),
        column("train", required=False, help="how the model was trained, from its card"),
        column("defense", help=defense_help), column("arch"), column("recipe"),
    )


PROVENANCE: tuple[Column, ...] = (column("tag", required=False), column("config_hash"), column("weights_sha256"),
                                  column("git_commit"), column("versions"))


@dataclass(frozen=True)
class SideTrack:
    """One side track's file naming, columns, row key and interval checks (``(lo, value, hi)`` column names)."""

    suffix: str
    title: str
    schema: tuple[Column, ...]
    key: tuple[str, ...]
    intervals: tuple[tuple[str, str, str], ...] = ()
    rerun: str = ""  # the command that rewrites a row, for error messages
    describe: tuple[str, ...] = field(default=("model",))  # columns that name a new row in error messages

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.schema)

    @property
    def by_name(self) -> dict[str, Column]:
        return {c.name: c for c in self.schema}

    def name(self, dataset: str, size: int | str) -> str:
        return f"{dataset}_{size}_{self.suffix}"

    def path(self, leaderboard_dir: str | Path, dataset: str, size: int | str) -> Path:
        return Path(leaderboard_dir) / f"{self.name(dataset, size)}.csv"

    def is_file(self, path: str | Path) -> bool:
        return Path(path).name.endswith(f"_{self.suffix}.csv")

    def files(self, folder: str | Path) -> list[Path]:
        return [p for p in sorted(Path(folder).glob("*.csv")) if self.is_file(p)]

    # ---------------------------------------------------------------------------------------------- reading
    def _check_header(self, header: Sequence[str], where: str) -> None:
        columns, seen = self.columns, set()
        for i, name in enumerate(header):
            if name not in self.by_name:
                expected = columns[i] if i < len(columns) else None
                hint = f"; the {self.title} expects {expected!r} there" if expected and expected not in header else ""
                raise LeaderboardSchemaError(
                    f"{where}: line 1, column {i + 1} is {name!r}, which is not a {self.title} column{hint} "
                    f"(columns: {', '.join(columns)}). Restore the header; the file was left unchanged.")
            if name in seen:
                raise LeaderboardSchemaError(f"{where}: line 1 names column {name!r} twice. Remove one; the file was left unchanged.")
            seen.add(name)
        missing = [c for c in columns if c not in seen]
        if missing:
            raise LeaderboardSchemaError(f"{where}: line 1 lacks the column(s) {', '.join(map(repr, missing))}. "
                                         "Restore them; the file was left unchanged.")

    def _interval_problem(self, row: Mapping[str, str], name: str) -> str | None:
        for lo_name, value_name, hi_name in self.intervals:
            if name == lo_name and all(row.get(c) for c in (lo_name, value_name, hi_name)):
                lo, value, hi = float(row[lo_name]), float(row[value_name]), float(row[hi_name])
                if not lo <= value <= hi:
                    return f"the interval [{lo}, {hi}] does not contain {value_name} {value}"
        return None

    def _check_row(self, header: Sequence[str], values: Sequence[str], where: str, line: int) -> dict[str, str]:
        if len(values) != len(header):
            raise LeaderboardSchemaError(
                f"{where}: line {line} has {len(values)} fields, expected {len(header)} ({', '.join(header)}). "
                "Fix or delete that line; the file was left unchanged.")
        row = dict(zip(header, values))
        for column in self.schema:
            problem = column.problem(row[column.name]) or self._interval_problem(row, column.name)
            if problem:
                raise LeaderboardSchemaError(
                    f"{where}: line {line}, column {header.index(column.name) + 1} ({column.name}) is "
                    f"{row[column.name]!r}: {problem}. Correct the cell from the run's summary.json, or delete the "
                    f"line and rerun {self.rerun}; the file was left unchanged.")
        return {c: row[c] for c in self.columns}

    def read(self, path: str | Path) -> list[dict[str, str]]:
        """Read and validate one file of this track; LeaderboardSchemaError names the file, line and column."""
        return read_checked_csv(path, self._check_header, self._check_row)

    # ---------------------------------------------------------------------------------------------- writing
    def validate(self, row: Mapping[str, str], where: str = "new row") -> None:
        """Refuse a row about to be written with an empty required cell or a value its column does not accept."""
        for column in self.schema:
            value = row.get(column.name, "")
            problem = column.problem(value) if value != "" else ("empty, but every new row must record it"
                                                                   if column.required else None)
            problem = problem or self._interval_problem(row, column.name)
            if problem:
                raise LeaderboardSchemaError(f"{where}: column {column.name} is {value!r}: {problem}; nothing was written.")

    def row_key(self, row: Mapping[str, object]) -> tuple[str, ...]:
        return tuple(format_value(row.get(k)) for k in self.key)

    def upsert(self, path: str | Path, new_rows: Iterable[Mapping[str, object]]) -> Path:
        """Add ``new_rows``, replacing rows with the same key; every row validated first, written atomically under a lock."""
        path = Path(path)
        new = [{c: format_value(r.get(c)) for c in self.columns} for r in new_rows]
        for i, row in enumerate(new):
            self.validate(row, f"{path}: new row {i + 1} (" + " ".join(f"{c}={row[c]}" for c in self.describe) + ")")
        return replace_rows_locked(path, new, self.columns, self.row_key, self.read)


def evaluations(rows: Sequence[Mapping[str, str]]) -> list[list[Mapping[str, str]]]:
    """Rows grouped by evaluation (configuration, weights, model), in first-seen order."""
    groups: dict[tuple[str, str, str], list[Mapping[str, str]]] = {}
    for r in rows:
        groups.setdefault((r["config_hash"], r["weights_sha256"], r["model"]), []).append(r)
    return list(groups.values())


def whole_test_split(first: Mapping[str, str], what: str) -> str | None:
    """Why an evaluation is not of the whole test split (None when it is): only those are promoted."""
    from bench.leaderboard.admission import full_split_size

    expected = full_split_size(first["dataset"], "test")
    if first["split"] != "test":
        return f"it {what} the {first['split']} split, not the test split"
    if expected is not None and str(first["n"]) != str(expected):
        return f"n={first['n']} is a subset of the {expected}-image test split"
    return None


def side_tracks() -> tuple[SideTrack, ...]:
    """Every side track (imported here, not at module load, so each track module may import this one)."""
    from bench.leaderboard.certified import CERTIFIED
    from bench.leaderboard.corruption import CORRUPTION

    return (CERTIFIED, CORRUPTION)


def is_side_track_file(path: str | Path) -> bool:
    return any(t.is_file(path) for t in side_tracks())
