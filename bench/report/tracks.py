"""Leaderboard tracks as loaded from the CSVs: value formatting, the primary rows of a track, its ranking.

The shared base of the report: :mod:`bench.report.markdown`, :mod:`bench.report.page` and
:mod:`bench.report.figures` all render what this module loads and ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError
from bench.leaderboard import read_rows

Row = Mapping[str, str]

REGENERATE = "python scripts/leaderboard.py"

# Why a flag matters; shown as a tooltip on every badge (names from bench/checks.py).
FLAG_HELP = {
    "zero_grad": "gradients vanish (masking): gradient attacks are blind, robust accuracy is likely overestimated",
    "softmax_output": "model outputs probabilities: losses saturate, gradient attacks can be weakened",
    "nondeterministic": "randomised outputs: two identical calls differ; use EOT before trusting the number",
    "unbounded_eps_not_zero": "unbounded PGD leaves samples robust: the attack is not converging (masking or a bug)",
    "black_box_beats_white_box": "a black-box attack beats every gradient attack: gradients are likely masked",
    "robust_acc_rises_with_eps": "robust accuracy rises with eps: a stronger budget found fewer adversarial examples",
}
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
    for path in sorted(Path(leaderboard_dir).glob("*.csv")):
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


def primary_rows(rows: Sequence[Row]) -> list[Row]:
    """The rows that rank a track: its battery rows (per-sample worst case), or all rows if it has none."""
    battery = [r for r in rows if is_battery(r)]
    return battery or list(rows)


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
    """One line of a ranking: a (model, defense, attack, config_hash) with its rows by epsilon."""

    rank: int
    model: str
    defense: str
    arch: str
    attack: str
    config_hash: str
    n: str
    clean_acc: str
    by_eps: dict[str, Row]
    flags: tuple[str, ...]


def _first(rows: Iterable[Row], column: str) -> str:
    return next((r[column] for r in rows if r.get(column)), "")


def ranking_rows(rows: Sequence[Row]) -> tuple[list[tuple[str, str]], list[RankedEntry]]:
    """Rank a track's primary rows: by robust accuracy at the largest eps, then the next, descending.

    Returns the epsilon columns (key, label) and the entries; equal scores share a rank (1, 2, 2, 4).
    """
    chosen = primary_rows(rows)
    columns = _eps_columns(chosen)
    groups: dict[tuple[str, str, str, str], list[Row]] = {}
    for r in chosen:
        groups.setdefault((r["model"], r["defense"], r["attack"], r["config_hash"]), []).append(r)

    def score(group: list[Row]) -> tuple[float, ...]:
        by_eps = {eps_key(r): num(r["robust_acc"]) for r in group}
        return tuple(-1.0 if by_eps.get(k) is None else by_eps[k] for k, _ in reversed(columns))  # type: ignore[misc]

    ordered = sorted(groups.items(), key=lambda kv: (tuple(-s for s in score(kv[1])), kv[0]))
    entries: list[RankedEntry] = []
    previous: tuple[float, ...] | None = None
    for position, ((model, defense, attack, config), group) in enumerate(ordered, start=1):
        current = score(group)
        rank = entries[-1].rank if entries and current == previous else position
        previous = current
        flags = tuple(dict.fromkeys(f for r in group for f in flag_list(r["flags"])))
        ns = sorted({r["n"] for r in group if r["n"]}, key=lambda s: num(s) or 0)
        entries.append(RankedEntry(
            rank, model, defense, _first(group, "arch"), attack, config, "/".join(ns),
            _first(group, "clean_acc"), {eps_key(r): r for r in group}, flags,
        ))
    return columns, entries
