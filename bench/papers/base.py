"""What a reproduced paper declares, and how its table is built from the rows its runs wrote."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from bench.registry import Registry

PAPERS: Registry["Paper"] = Registry("paper", "Run `python scripts/paper.py --list` for the reproduced papers.")


@dataclass(frozen=True)
class Paper:
    """One reproduced paper.

    ``experiment`` is the conf/experiment/ file whose multirun makes the rows;
    ``datasets`` the flags it runs on (each skipped, with the reason, when its
    file is missing and cannot be downloaded); ``row`` turns one leaderboard row
    into a table row, or None for a row that is not the paper's.
    """

    name: str
    experiment: str
    datasets: tuple[str, ...]
    columns: tuple[str, ...]
    row: Callable[[Mapping[str, str]], dict[str, object] | None]
    sort_by: tuple[str, ...] = field(default=("dataset",))


def latest_rows(rows: Iterable[Mapping[str, str]], tag: str) -> list[Mapping[str, str]]:
    """The newest row per (dataset, size, model, defense, attack, eps) among rows tagged ``tag``."""
    newest: dict[tuple[str, ...], Mapping[str, str]] = {}
    for row in rows:
        if row.get("tag") != tag:
            continue
        key = tuple(str(row.get(k, "")) for k in ("dataset", "size", "model", "defense", "attack", "eps_label"))
        if key not in newest or str(row.get("date", "")) >= str(newest[key].get("date", "")):
            newest[key] = row
    return list(newest.values())


def build_table(paper: Paper, rows: Iterable[Mapping[str, str]]) -> list[dict[str, object]]:
    """The paper's table rows, sorted, from every leaderboard row (only its tag's newest rows count)."""
    table = [made for row in latest_rows(rows, paper.experiment) if (made := paper.row(row)) is not None]
    order = {flag: i for i, flag in enumerate(paper.datasets)}
    return sorted(table, key=lambda r: tuple(order.get(str(r[k]), len(order)) if k == "dataset" else str(r[k])
                                             for k in paper.sort_by))
