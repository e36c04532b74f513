"""Promotion: the one explicit step that moves finished evaluations from a local leaderboard into the tracked one.

Runs write their rows to ``outputs/leaderboard/`` (git-ignored), so smoke runs,
tests and half-tried ideas never touch ``results/``. ``python scripts/promote.py``
copies the evaluations that meet the admission rules (every row of each: the
battery's worst case and every attack) into ``results/leaderboard/``, each track
file by a locked atomic upsert; evaluations that do not qualify stay local unless
``--include-flagged`` (whole standard-battery evaluations kept out only by their checks' flags: a defense
found unreliable is a result) or ``--include-unranked`` (anything) keeps them on record, unranked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError
from bench.leaderboard.admission import Admission, Evaluation, admit, group_evaluations
from bench.leaderboard.store import read_rows, track_files, upsert_rows


@dataclass(frozen=True)
class Decision:
    """What promotion does with one evaluation of one track file."""

    track: str  # the file name, e.g. breastmnist_28_linf.csv
    evaluation: Evaluation
    admission: Admission
    promote: bool

    def line(self, dry_run: bool) -> str:
        ev = self.evaluation
        what = ("would promote" if dry_run else "promoted") if self.promote else "kept local"
        return (f"{what:>14}  {self.track}  {ev.model}  {ev.first('battery') or ev.first('attack')}  n={ev.first('n')}  "
                f"config {ev.config_hash}  [{self.admission.status}]")


def plan(source: Path, config_hashes: Sequence[str] = (), models: Sequence[str] = (),
         include_unranked: bool = False, include_flagged: bool = False) -> list[Decision]:
    """Decide, for every selected evaluation in ``source``'s track files, whether it is promoted."""
    if not source.is_dir():
        raise BenchError(f"local leaderboard folder {source} does not exist; run `medbench attack ...` first "
                         "(python scripts/attack.py; it writes outputs/leaderboard/<dataset>_<size>_<norm>.csv), "
                         "or pass --from.")
    decisions = []
    for path in track_files(source):
        for ev in group_evaluations(read_rows(path)):
            if config_hashes and ev.config_hash not in config_hashes:
                continue
            if models and ev.model not in models:
                continue
            admission = admit(ev)
            wanted = admission.ranked or include_unranked or (include_flagged and admission.complete_but_flagged)
            decisions.append(Decision(path.name, ev, admission, wanted))
    if (config_hashes or models) and not decisions:
        raise BenchError(f"no evaluation in {source} matches --config-hash {list(config_hashes)} --model {list(models)}; "
                         "the config hash of a run is in its summary.json and in the table it printed.")
    return decisions


def promote(source: Path, target: Path, config_hashes: Sequence[str] = (), models: Sequence[str] = (),
            include_unranked: bool = False, dry_run: bool = False, include_flagged: bool = False) -> list[Decision]:
    """Copy the promoted evaluations' rows into ``target`` (one upsert per track file); return every decision."""
    decisions = plan(source, config_hashes, models, include_unranked, include_flagged)
    if not dry_run:
        by_track: dict[str, list] = {}
        for d in decisions:
            if d.promote:
                by_track.setdefault(d.track, []).extend(d.evaluation.rows)
        for track, rows in by_track.items():
            upsert_rows(target / track, rows, copied=True)
    return decisions
