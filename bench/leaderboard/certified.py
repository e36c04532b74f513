"""The certified track: randomised smoothing's certified L2 accuracy, one CSV per dataset and size.

File: ``<leaderboard_dir>/<flag>_<size>_certified_l2.csv``, written by ``scripts/certify.py``; it sits beside
the empirical tracks' files but has its own columns, so code that globs ``*.csv`` there for the empirical
schema must skip it (:func:`is_certified_file`).

Layout: **one row per (evaluation, radius)**, the long form the empirical track
uses (one row per epsilon), rather than one row per evaluation with a column
per radius. Why: the radii are a setting (``certify.radii``), not a schema
change (asking for radius 0.75 adds rows, not a column every older file
lacks); each radius carries its own 95% interval and count in plain columns; and
a re-run with more radii upserts its rows next to, or over, the old ones because
the configuration hash leaves out the radii (they change which rows are
summarised, not a single certificate). The per-evaluation values (abstention
rate, mean radius, seconds) repeat on each of its rows.

Every column is declared once (kind and whether a new row must fill it), with
the kinds of the empirical track (:mod:`bench.leaderboard.schema`); a file is
validated on read (a bad header or cell is refused naming the file, line and
column, and the file is left as it was), and rows are upserted by :data:`KEY`
under a lock, by rewriting to a temporary file renamed over the old one.

``certified_acc_lo``/``_hi`` are a 95% Clopper-Pearson interval over the
evaluated samples (the certificates themselves each hold with probability at
least ``1 - alpha`` over the noise draws; the interval does not include that).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from bench.leaderboard.schema import Column
from bench.leaderboard.side_track import (
    PROVENANCE, SideTrack, column, evaluated_columns, evaluations, whole_test_split,
)

CERTIFIED_SCHEMA_VERSION = 1
NORM = "l2"


_c = column

CERTIFIED_SCHEMA: tuple[Column, ...] = (
    *evaluated_columns("certified", "the defense as the empirical track names it: smoothing(sigma=0.25)"),
    # how
    _c("sigma", "number", help="standard deviation of the Gaussian noise (inputs in [0, 1])"),
    _c("n0", "count", help="noise draws that select the top class"),
    _c("n_noise", "count", help="noise draws that estimate pA (Cohen et al.: 100000); the n actually used"),
    _c("alpha", "fraction", help="failure probability of each certificate"),
    _c("seed", "count"),
    # metrics
    _c("radius", "number", help="L2 radius (inputs in [0, 1])"),
    _c("certified_acc", "fraction", help="samples not abstained, correct, with certified radius >= radius"),
    _c("certified_acc_lo", "fraction", help="95% Clopper-Pearson interval over the samples"),
    _c("certified_acc_hi", "fraction"),
    _c("abstain_rate", "fraction", help="samples where CERTIFY abstained (pA's lower bound < 1/2)"),
    _c("mean_radius", "number", help="mean certified radius of the correct, non-abstained samples"),
    _c("seconds", "number", help="wall-clock seconds of the certification (all samples)"),
    _c("device", required=False, help="where the noise was drawn (cpu, cuda); CPU and GPU draws differ"),
    *PROVENANCE,
)
# An evaluation is (configuration, weights, model); it has one row per radius.
KEY = ("config_hash", "weights_sha256", "model", "radius")
CERTIFIED = SideTrack(f"certified_{NORM}", "certified track", CERTIFIED_SCHEMA, KEY,
                      intervals=(("certified_acc_lo", "certified_acc", "certified_acc_hi"),),
                      rerun="scripts/certify.py", describe=("model", "sigma", "radius"))
COLUMNS: tuple[str, ...] = CERTIFIED.columns
BY_NAME: dict[str, Column] = CERTIFIED.by_name


def certified_track_name(dataset: str, size: int | str) -> str:
    return CERTIFIED.name(dataset, size)


def certified_path(leaderboard_dir: str | Path, dataset: str, size: int | str) -> Path:
    return CERTIFIED.path(leaderboard_dir, dataset, size)


def is_certified_file(path: str | Path) -> bool:
    """Whether a CSV in a leaderboard folder is a certified-track file (readers of the empirical tracks skip it)."""
    return CERTIFIED.is_file(path)


def read_certified(path: str | Path) -> list[dict[str, str]]:
    """Read and validate a certified-track CSV; LeaderboardSchemaError names the file, line and column."""
    return CERTIFIED.read(path)


def validate_certified_row(row: Mapping[str, str], where: str = "new row") -> None:
    CERTIFIED.validate(row, where)


def certified_key(row: Mapping[str, object]) -> tuple[str, ...]:
    return CERTIFIED.row_key(row)


def upsert_certified(path: str | Path, new_rows: Iterable[Mapping[str, object]]) -> Path:
    """Add ``new_rows``, replacing rows with the same key; every row validated first, written atomically under a lock."""
    return CERTIFIED.upsert(path, new_rows)


__all__ = ["BY_NAME", "CERTIFIED", "CERTIFIED_SCHEMA", "CERTIFIED_SCHEMA_VERSION", "COLUMNS", "KEY", "certified_key",
           "certified_path", "certified_track_name", "is_certified_file", "read_certified", "upsert_certified",
           "validate_certified_row"]


# --------------------------------------------------------------------------------------------------
# promotion and tables
# --------------------------------------------------------------------------------------------------
def certified_files(folder: str | Path) -> list[Path]:
    return CERTIFIED.files(folder)


def certified_evaluations(rows: Sequence[Mapping[str, str]]) -> list[list[Mapping[str, str]]]:
    """Rows grouped by evaluation (configuration, weights, model), in first-seen order, radii ascending."""
    return [sorted(g, key=lambda r: float(r["radius"])) for g in evaluations(rows)]


def certified_admission(rows: Sequence[Mapping[str, str]]) -> str | None:
    """Why a certified evaluation is not promoted (None: it is): it must certify the whole test split."""
    return whole_test_split(rows[0], "certified")


def promote_certified(source: Path, target: Path, dry_run: bool = False) -> list[str]:
    """Copy certified evaluations of whole test splits into ``target``; one line per decision."""
    lines = []
    for path in certified_files(source):
        for ev in certified_evaluations(read_certified(path)):
            why = certified_admission(ev)
            what = ("would promote" if dry_run else "promoted") if why is None else "kept local"
            lines.append(f"{what:>14}  {path.name}  {ev[0]['model']}  {ev[0]['defense']}  n={ev[0]['n']}  "
                         f"n_noise={ev[0]['n_noise']}" + (f"  [{why}]" if why else ""))
            if why is None and not dry_run:
                upsert_certified(target / path.name, ev)
    return lines


def certified_markdown(path: Path) -> list[str]:
    """A Markdown table of one certified track: certified accuracy [95% CI] per radius, per evaluation."""
    rows = read_certified(path)
    evaluations = certified_evaluations(rows)
    if not evaluations:
        return []
    radii = sorted({float(r["radius"]) for r in rows})
    first = rows[0]
    lines = [f"## {first['dataset']} {first['size']}x{first['size']}, certified L2 (randomised smoothing)", "",
             "Cohen et al.'s CERTIFY (`python scripts/certify.py ...`): a sample counts at radius r when the "
             "smoothed classifier does not abstain, is correct, and its certified radius is at least r. "
             "Certified accuracy [95% Clopper-Pearson interval over samples]; `n_noise` is the number of noise "
             "draws used (Cohen et al. use 100,000).", ""]
    header = ["model", "defense", "n", "n0", "n_noise", "alpha", *[f"r={r:g}" for r in radii], "abstain",
              "config_hash", "weights"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for ev in evaluations:
        by_radius = {float(r["radius"]): r for r in ev}
        cells = []
        for radius in radii:
            r = by_radius.get(radius)
            cells.append("" if r is None else f"{float(r['certified_acc']):.3f} [{float(r['certified_acc_lo']):.2f}, "
                                              f"{float(r['certified_acc_hi']):.2f}]")
        e = ev[0]
        lines.append("| " + " | ".join([e["model"], e["defense"], e["n"], e["n0"], e["n_noise"], e["alpha"], *cells,
                                        f"{float(e['abstain_rate']):.3f}", e["config_hash"], e["weights_sha256"][:8]])
                     + " |")
    return lines + [""]
