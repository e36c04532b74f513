"""The corruption track (MedMNIST-C): balanced error under common corruptions, one CSV per dataset and size.

File: ``<leaderboard_dir>/<flag>_<size>_corruptions.csv``, written by ``scripts/corrupt.py``. One row
per (evaluation, corruption, severity), in the long form of the other tracks, plus two kinds of summary
row: severity ``mean`` (a corruption's mean over its five severities) and corruption ``all`` with
severity ``mean`` (the mean over every corruption and severity: the track's headline number, lower is
better). Why balanced error (1 - balanced accuracy) and not MedMNIST-C's relative errors: those divide
by an AlexNet baseline measured at 224x224 (not comparable at other sizes), and for PneumoniaMNIST's
``contrast_up`` the baseline's corrupted error is below its clean error, so the denominator is negative
and the ratio meaningless. ``balanced_error_increase`` (corrupted minus clean, same model) is the
degradation without any baseline.

Intervals are 95% bootstrap percentile intervals over the test samples (the same resamples for every
corruption and severity, so the summary rows' intervals are those of the mean). ``images_sha256`` is
the checksum of the corrupted images a severity row was measured on (for summary rows, of the list of
those checksums): two rows with the same checksum saw the same pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from bench.leaderboard.schema import Column
from bench.leaderboard.side_track import (
    PROVENANCE, SideTrack, column, evaluated_columns, evaluations, whole_test_split,
)

ALL = "all"
MEAN = "mean"


_c = column

CORRUPTION_SCHEMA: tuple[Column, ...] = (
    *evaluated_columns("evaluated", "the defense wrapped around the model (none, jpeg(quality=75) ...)"),
    # the corruption
    _c("corruption", help="a MedMNIST-C corruption of the dataset, or 'all' (the mean over every one)"),
    _c("family", required=False, help="MedMNIST-C's group: digital, noise, blur, color, task-specific"),
    _c("severity", help="1..5, or 'mean' (over the five severities)"),
    _c("params", required=False, help="medmnistc's parameter for this severity"),
    _c("applied_at", "count", help="the image size the corruption was applied at (224 for spatial ones)"),
    _c("corruption_seed", "count", help="seed of the corruptions' random draws"),
    _c("medmnistc", help="the medmnistc version whose corruption code made the images"),
    _c("images_sha256", help="sha256 of the corrupted uint8 images (summary rows: of their checksums)"),
    # metrics
    _c("balanced_error", "fraction", help="1 - balanced accuracy (multi-label: mean over labels)"),
    _c("balanced_error_lo", "fraction", help="95% bootstrap interval over the samples"),
    _c("balanced_error_hi", "fraction"),
    _c("balanced_error_increase", "signed", help="balanced_error minus the clean balanced error"),
    _c("acc", "fraction", help="accuracy on the corrupted images"),
    _c("auc", "fraction", required=False, help="AUC as medmnist's Evaluator computes it (empty if undefined)"),
    _c("clean_balanced_error", "fraction"), _c("clean_acc", "fraction"),
    _c("clean_auc", "fraction", required=False),
    _c("seconds", "number", help="wall-clock seconds of the row's predictions (summary rows: their sum)"),
    _c("device", required=False),
    *PROVENANCE,
)
KEY = ("config_hash", "weights_sha256", "model", "corruption", "severity")
CORRUPTION = SideTrack("corruptions", "corruption track", CORRUPTION_SCHEMA, KEY,
                       intervals=(("balanced_error_lo", "balanced_error", "balanced_error_hi"),),
                       rerun="scripts/corrupt.py", describe=("model", "corruption", "severity"))
COLUMNS = CORRUPTION.columns


def headline(evaluation: Sequence[Mapping[str, str]]) -> Mapping[str, str] | None:
    """The evaluation's ``all``/``mean`` row (its mean balanced error), if it has one."""
    return next((r for r in evaluation if r["corruption"] == ALL and r["severity"] == MEAN), None)


def admission(evaluation: Sequence[Mapping[str, str]]) -> str | None:
    """Why an evaluation is not ranked or promoted (None: it is): the whole test split, every corruption, 5 severities."""
    from bench.corruptions.catalog import SEVERITIES, CorruptionUnavailable, corruptions_for

    first = evaluation[0]
    split = whole_test_split(first, "evaluated")
    if split is not None:
        return split
    try:
        wanted = set(corruptions_for(first["dataset"]))
    except CorruptionUnavailable:
        wanted = set()
    done = {r["corruption"] for r in evaluation if r["corruption"] != ALL
            and {x["severity"] for x in evaluation if x["corruption"] == r["corruption"]} >= {str(s) for s in SEVERITIES}}
    missing = sorted(wanted - done)
    if missing:
        return f"corruption(s) {', '.join(missing)} not evaluated at every severity"
    if headline(evaluation) is None:
        return "it has no mean row"
    return None


def ranked(rows: Sequence[Mapping[str, str]]) -> list[tuple[int | None, list[Mapping[str, str]], str | None]]:
    """(rank or None, rows, why unranked) per evaluation: admitted ones by mean balanced error ascending, then the rest."""
    items = [(ev, admission(ev)) for ev in evaluations(rows)]
    score = lambda ev: float(headline(ev)["balanced_error"]) if headline(ev) else float("inf")  # noqa: E731
    items.sort(key=lambda item: (item[1] is not None, score(item[0]), item[0][0]["model"], item[0][0]["defense"]))
    out, previous, rank = [], None, 0
    for position, (ev, why) in enumerate(items, start=1):
        if why is None:
            rank = rank if score(ev) == previous else position
            previous = score(ev)
        out.append((rank if why is None else None, ev, why))
    return out


def leaderboard_weights(folder: Path) -> set[str]:
    """The weights (sha256) with rows in ``folder``'s empirical or certified tracks: the leaderboard's models."""
    from bench.leaderboard.certified import CERTIFIED
    from bench.leaderboard.store import read_rows, track_files

    weights = {r["weights_sha256"] for path in track_files(folder) for r in read_rows(path)}
    return weights | {r["weights_sha256"] for path in CERTIFIED.files(folder) for r in CERTIFIED.read(path)}


def promote_corruption(source: Path, target: Path, dry_run: bool = False) -> list[str]:
    """Copy complete corruption evaluations of whole test splits into ``target``; one line per decision.

    Only models the target leaderboard already holds (rows of the same weights in an empirical or certified
    track) are promoted: the corruption track describes the leaderboard's models, and a paper study's many
    models (``results/paper/``) stay out of it.
    """
    lines = []
    on_board = leaderboard_weights(target) if Path(target).is_dir() else set()
    for path in CORRUPTION.files(source):
        for ev in evaluations(CORRUPTION.read(path)):
            why = admission(ev)
            if why is None and ev[0]["weights_sha256"] not in on_board:
                why = "its weights have no row on the leaderboard yet (promote their attack or certified rows first)"
            what = ("would promote" if dry_run else "promoted") if why is None else "kept local"
            lines.append(f"{what:>14}  {path.name}  {ev[0]['model']}  {ev[0]['defense']}  n={ev[0]['n']}"
                         + (f"  [{why}]" if why else ""))
            if why is None and not dry_run:
                CORRUPTION.upsert(target / path.name, ev)
    return lines


def corruption_table(rows: Sequence[Mapping[str, str]]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of a track's summary table: one line per evaluation, mean balanced error per corruption."""
    names = list(dict.fromkeys(r["corruption"] for r in rows if r["corruption"] != ALL))
    header = ["rank", "model", "defense", "n", "clean BE", "mean BE [95% CI]", "mean acc", "mean AUC",
              *names, "status", "config_hash", "weights"]
    body = []
    for rank, ev, why in ranked(rows):
        means = {r["corruption"]: r for r in ev if r["severity"] == MEAN}
        top = means.get(ALL)
        first = ev[0]

        def f3(value: str | None) -> str:
            return "" if not value else f"{float(value):.3f}"

        mean_cell = "" if top is None else (f"{float(top['balanced_error']):.3f} [{float(top['balanced_error_lo']):.2f}, "
                                            f"{float(top['balanced_error_hi']):.2f}]")
        body.append(["" if rank is None else str(rank), first["model"], first["defense"], first["n"],
                     f3(first["clean_balanced_error"]), mean_cell, f3(top and top["acc"]), f3(top and top["auc"]),
                     *[f3(means[c]["balanced_error"]) if c in means else "" for c in names],
                     "ranked" if why is None else f"unranked: {why}", first["config_hash"],
                     (first.get("weights_sha256") or "")[:8]])  # a retrained backbone is another evaluation
    return header, body


def corruption_markdown(path: Path) -> list[str]:
    """A Markdown section for one corruption track."""
    rows = CORRUPTION.read(path)
    if not rows:
        return []
    header, body = corruption_table(rows)
    first = rows[0]
    lines = [f"## {first['dataset']} {first['size']}x{first['size']}, common corruptions (MedMNIST-C)", "",
             "`python scripts/corrupt.py ...`: balanced error (1 - balanced accuracy; lower is better) under each "
             "of the dataset's MedMNIST-C corruptions, averaged over its five severities; *mean BE* averages every "
             "corruption and severity and ranks the track (95% bootstrap interval over samples). Per-severity rows, "
             f"accuracy, AUC and the corrupted images' checksums are in `{path.name}`.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return lines + [""]


__all__ = ["ALL", "COLUMNS", "CORRUPTION", "CORRUPTION_SCHEMA", "KEY", "MEAN", "admission", "corruption_markdown",
           "corruption_table", "evaluations", "headline", "promote_corruption", "ranked"]
