"""What a reproduced paper declares, and how its table is built from the rows its runs wrote."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.registry import Registry

PAPERS: Registry["Paper"] = Registry("paper", "Run `medbench paper --list` for the reproduced papers.")


@dataclass(frozen=True)
class Paper:
    """One reproduced paper, or a study run the same way (the model zoo).

    ``experiment`` is the conf/experiment/ file whose multirun makes the rows (they carry its name as their
    tag). ``datasets`` are the flags it runs on (each skipped, with the reason, when its file is missing and
    cannot be downloaded). ``commands`` are the ``medbench`` subcommands each run runs (``attack``; ``corrupt``
    for a corruption track of the same models; ``train``), every run of one command before the next;
    ``command_overrides`` go to one command only. ``runs`` are the override sets, one multirun per set, command
    and dataset; ``dataset_runs`` replaces them for a dataset whose runs differ (the zoo's per-family budgets);
    ``per_dataset`` adds overrides to every run of a dataset (a training budget). ``rows`` turns one leaderboard
    row into the table's rows (none for a row that is not the paper's); ``extra`` writes further outputs (a
    summary, a figure) from the rows, the corruption-track rows and their per-sample records:
    ``extra(rows, records_root, out, corruption_rows)``; ``table``, when set, builds the table from the model
    zoo's cards instead (a paper about training, not attacks); ``table_path`` is where the table goes, relative
    to the workspace (default ``results/paper/<name>.csv``). ``kept_by`` names the columns that say which
    committed rows a rebuilt table keeps: those whose values there the new table has no row for (a machine that
    ran one dataset, or one model, does not erase another machine's measured rows).
    """

    name: str
    experiment: str
    datasets: tuple[str, ...]
    columns: tuple[str, ...]
    rows: Callable[[Mapping[str, str]], list[dict[str, object]]]
    sort_by: tuple[str, ...] = field(default=("dataset",))
    runs: tuple[tuple[str, ...], ...] = ((),)
    per_dataset: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # overrides for one dataset's jobs
    dataset_runs: Mapping[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)  # replaces runs there
    commands: tuple[str, ...] = ("attack",)  # each run is a multirun of each of these `medbench` subcommands
    command_overrides: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # e.g. train: reuse=true
    extra: Callable[..., list[tuple[Path, str | None]]] | None = None
    table: Callable[[Path], list[dict[str, object]]] | None = None  # the table from the zoo's cards, not from rows
    table_path: str | None = None
    kept_by: tuple[str, ...] = ("dataset",)  # committed rows whose values here the new table lacks are kept
    # Which of the experiment's newest rows the study uses (default: all); e.g. the zoo keeps one training per model
    select: Callable[[list[Mapping[str, str]]], list[Mapping[str, str]]] | None = None

    def runs_on(self, flag: str) -> tuple[tuple[str, ...], ...]:
        """The override sets of ``flag``'s multiruns (one multirun per set and command)."""
        return self.dataset_runs.get(flag, self.runs)

    def output(self, workspace: Path) -> Path:
        """Where the table is written when ``--out`` is not given."""
        return workspace / (self.table_path or f"results/paper/{self.name}.csv")


def latest_rows(rows: Iterable[Mapping[str, str]], tag: str) -> list[Mapping[str, str]]:
    """The newest row per (dataset, size, model, training, defense, attack, eps) among rows tagged ``tag``."""
    newest: dict[tuple[str, ...], Mapping[str, str]] = {}
    for row in rows:
        if row.get("tag") != tag:
            continue
        key = tuple(str(row.get(k, "")) for k in ("dataset", "size", "model", "train", "defense", "attack",
                                                  "eps_label"))
        if key not in newest or str(row.get("date", "")) >= str(newest[key].get("date", "")):
            newest[key] = row
    return list(newest.values())


def _sort_value(value: object) -> tuple[int, object]:
    text = str(value)
    return (0, int(text)) if text.isdigit() else (1, text)


def study_rows(paper: Paper, rows: Iterable[Mapping[str, str]]) -> list[Mapping[str, str]]:
    """The leaderboard rows the study is built from: its tag's newest rows, narrowed by its ``select``."""
    newest = latest_rows(rows, paper.experiment)
    return paper.select(newest) if paper.select is not None else newest


def build_table(paper: Paper, rows: Iterable[Mapping[str, str]]) -> list[dict[str, object]]:
    """The paper's table rows, sorted, from every leaderboard row (only the study's rows count)."""
    return sort_table(paper, [made for row in study_rows(paper, rows) for made in paper.rows(row)])


def sort_table(paper: Paper, table: Iterable[Mapping[str, object]]) -> list[dict[str, object]]:
    """Rows in the paper's order: its datasets in their declared order, then ``sort_by`` (numbers as numbers)."""
    order = {flag: i for i, flag in enumerate(paper.datasets)}
    return sorted((dict(r) for r in table), key=lambda r: tuple(
        (0, order.get(str(r[k]), len(order))) if k == "dataset" else _sort_value(r[k]) for k in paper.sort_by))


def kept_rows(key_columns: Sequence[str], committed: Iterable[Mapping[str, str]],
              table: Iterable[Mapping[str, object]]) -> list[dict[str, str]]:
    """The committed rows whose ``key_columns`` values no row of the new ``table`` has: what a rebuild keeps
    because this machine measured nothing for them."""
    key = lambda r: tuple(str(r.get(k, "")) for k in key_columns)  # noqa: E731
    measured = {key(r) for r in table}
    return [dict(r) for r in committed if key(r) not in measured]


def save_figure(fig, path: Path) -> Path:
    """Write a pyplot figure as a PNG, whole or not at all, without the matplotlib version in its metadata (so the
    same numbers give the same bytes), and release it."""
    import io

    import matplotlib.pyplot as plt

    from bench.atomic import atomic_write

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, metadata={"Software": None})
    plt.close(fig)
    return atomic_write(path, buffer.getvalue())
