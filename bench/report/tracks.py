"""Leaderboard tracks as loaded from the CSVs: value formatting, the primary rows of a track, its ranking.

The shared base of the report: :mod:`bench.report.markdown`, :mod:`bench.report.page` and
:mod:`bench.report.figures` all render what this module loads and ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.checks import CHECKS
from bench.errors import BenchError
from bench.leaderboard.store import read_rows, track_files
from bench.leaderboard.admission import Admission, Evaluation, admit, group_evaluations

Row = Mapping[str, str]

REGENERATE = "python scripts/leaderboard.py"

# Why a flag matters; shown as a tooltip on every badge. Declared once, with each check (bench/checks.py).
FLAG_HELP = {c.name: c.meaning for c in CHECKS.values()}
UNKNOWN_FLAG_HELP = "raised by a check in bench/checks.py: look at this result before trusting it"


class ReportError(BenchError, ValueError):
    """An input of the report (README block, examples.npz) cannot be used as it is."""


# --------------------------------------------------------------------------------------------------
# loading and small value helpers
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Track:
    """One leaderboard CSV: a dataset x size x norm track and its rows (strings, as stored)."""

    name: str
    dataset: str
    size: str
    norm: str
    path: Path
    rows: tuple[dict[str, str], ...] = field(default=())

    @property
    def title(self) -> str:
        return f"{self.dataset} {self.size}x{self.size} {self.norm}" if self.size else self.name


def load_tracks(leaderboard_dir: str | Path) -> list[Track]:
    """Read every ``*.csv`` under ``leaderboard_dir`` (sorted); LeaderboardSchemaError names a bad file."""
    tracks = []
    for path in track_files(leaderboard_dir):
        rows = tuple(read_rows(path))
        parts = path.stem.rsplit("_", 2)
        dataset, size, norm = parts if len(parts) == 3 else (path.stem, "", "")
        if rows:  # the rows are the truth; the file name is only a fallback
            dataset, size, norm = rows[0]["dataset"] or dataset, rows[0]["size"] or size, rows[0]["norm"] or norm
        tracks.append(Track(path.stem, dataset, size, norm, path, rows))
    return tracks


def num(value: str | None) -> float | None:
    """A CSV cell as a float; None for empty, unparsable or NaN cells."""
    try:
        x = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return None if x is None or math.isnan(x) else x


def fmt(value: str | None, digits: int = 3) -> str:
    x = num(value)
    return "" if x is None else f"{x:.{digits}f}"


def fmt_ci(value: str | None, lo: str | None, hi: str | None) -> str:
    """``0.512 [0.43, 0.59]``: the value, then its 95% bootstrap interval when there is one."""
    x = num(value)
    if x is None:
        return ""
    low, high = num(lo), num(hi)
    return f"{x:.3f}" if low is None or high is None else f"{x:.3f} [{low:.2f}, {high:.2f}]"


def flag_list(flags: str) -> list[str]:
    return [f for f in (flags or "").split(";") if f]


def eps_key(row: Row) -> str:
    """A canonical text form of ``eps`` (so 0.0313725 and 0.03137250 are one threat model)."""
    x = num(row.get("eps"))
    return row.get("eps", "") if x is None else f"{x:.6g}"


def eps_text(row: Row) -> str:
    return row.get("eps_label") or row.get("eps", "")


def is_battery(row: Row) -> bool:
    return row.get("kind") == "battery"


def _eps_columns(rows: Iterable[Row]) -> list[tuple[str, str]]:
    """(eps key, readable label) of every epsilon in ``rows``, ascending."""
    labels: dict[str, str] = {}
    for r in rows:
        labels.setdefault(eps_key(r), eps_text(r))
    return sorted(labels.items(), key=lambda kv: (num(kv[0]) is None, num(kv[0]) or 0.0, kv[0]))


# --------------------------------------------------------------------------------------------------
# ranking
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RankedEntry:
    """One evaluation of a track: its rank (None when the admission rules keep it unranked) and its rows by eps."""

    rank: int | None
    evaluation: Evaluation
    admission: Admission
    by_eps: dict[str, Row]

    @property
    def model(self) -> str:
        return self.evaluation.model

    @property
    def defense(self) -> str:
        return self.evaluation.defense

    @property
    def config_hash(self) -> str:
        return self.evaluation.config_hash

    @property
    def arch(self) -> str:
        return self.evaluation.first("arch")

    @property
    def attack(self) -> str:
        """What produced the entry's numbers: ``battery:standard``, or the single attack's id."""
        return self.evaluation.primary_rows[0]["attack"]

    @property
    def adaptive(self) -> str:
        """The adaptive attacks the defense's declaration added ('' for undefended models)."""
        return (self.evaluation.first("adaptive") or "").replace(";", ", ")

    @property
    def n(self) -> str:
        return "/".join(sorted({r["n"] for r in self.evaluation.rows if r["n"]}, key=lambda s: num(s) or 0))

    @property
    def clean_acc(self) -> str:
        return self.evaluation.first("clean_acc")

    @property
    def train(self) -> str:
        return self.evaluation.first("train")

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(self.evaluation.flags)

    @property
    def ranked(self) -> bool:
        return self.rank is not None


def ranking_rows(rows: Sequence[Row]) -> tuple[list[tuple[str, str]], list[RankedEntry]]:
    """Rank a track's evaluations: admitted ones by robust accuracy at the largest eps, then the next, descending.

    Returns the epsilon columns (key, label) and the entries: ranked ones first (equal scores share a
    rank: 1, 2, 2, 4), then the unranked ones in the same order, with ``rank`` None. An unranked
    evaluation never outranks an admitted one, whatever its numbers.
    """
    evaluations = group_evaluations(rows)
    columns = _eps_columns(r for ev in evaluations for r in ev.primary_rows)

    def score(ev: Evaluation) -> tuple[float, ...]:
        by_eps = {eps_key(r): num(r["robust_acc"]) for r in ev.primary_rows}
        return tuple(-1.0 if by_eps.get(k) is None else by_eps[k] for k, _ in reversed(columns))  # type: ignore[misc]

    admitted = [(ev, admit(ev)) for ev in evaluations]
    ordered = sorted(admitted, key=lambda pair: (not pair[1].ranked, tuple(-s for s in score(pair[0])), pair[0].key))
    entries: list[RankedEntry] = []
    previous: tuple[float, ...] | None = None
    for position, (ev, admission) in enumerate(ordered, start=1):
        rank = None
        if admission.ranked:
            current = score(ev)
            rank = entries[-1].rank if entries and current == previous else position
            previous = current
        entries.append(RankedEntry(rank, ev, admission, {eps_key(r): r for r in ev.primary_rows}))
    return columns, entries
