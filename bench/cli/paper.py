"""Reproduce a paper (or run a study: ``zoo``): run its experiment on each of its datasets, then write its table
(results/paper/<paper>.csv; the zoo study's is results/zoo/zoo.csv).

    python scripts/paper.py finlayson2018                          # every dataset whose file is there
    python scripts/paper.py finlayson2018 --datasets pneumoniamnist
    python scripts/paper.py finlayson2018 --table-only             # rebuild the table from the rows on disk
    python scripts/paper.py finlayson2018 -- train.epochs=2        # extra overrides for every job

Each dataset is one multirun of ``experiment=<paper>`` per command and override set the paper declares
(scripts/attack.py, scripts/train.py...), so a killed run resumes from its
per-sample records and reuses its trained models. A dataset whose MedMNIST file is missing and cannot be
downloaded is skipped with the reason. The rebuilt table replaces the committed rows of what this machine
measured (by the paper's ``kept_by`` columns: the dataset, or the dataset and model) and keeps the others, so a
fresh machine that reruns one dataset does not erase another's rows; summaries built from per-sample records
keep their committed lines for the kept datasets, and figures that would lose one stay as committed.
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from bench.atomic import atomic_write
from bench.config import workspace_root
from bench.data import dataset_info, default_root, ensure_file
from bench.errors import BenchError
from bench.leaderboard.store import read_rows, track_files
from bench.papers import PAPERS, build_table
from bench.papers.base import kept_rows, sort_table, study_rows


def run_dataset(paper, flag: str, overrides: list[str], data_root: Path) -> bool:
    """The paper's multiruns on one dataset (one per command and override set it declares; every run of the first
    command before the second, so a study trains all its models before attacking any); False if its file is
    missing."""
    try:
        ensure_file(dataset_info(flag), data_root)
    except BenchError as exc:
        print(f"paper {paper.name}: skipping {flag}: {exc}", flush=True)
        return False
    for subcommand in paper.commands:
        for run in paper.runs_on(flag):
            command = [sys.executable, "-m", "bench.cli", subcommand, "-m", f"experiment={paper.experiment}",
                       f"dataset={flag}", *paper.per_dataset.get(flag, ()), *paper.command_overrides.get(subcommand, ()),
                       *run, *overrides]
            print("paper: medbench", " ".join(command[3:]), flush=True)
            subprocess.run(command, check=True)
    return True


def output_dir_of(overrides: list[str], what: str) -> Path:
    """Where the jobs wrote their rows (``leaderboard``) or records (``records``), given the overrides they ran
    with (conf/paths/default.yaml)."""
    values = dict(o.split("=", 1) for o in overrides if "=" in o)
    key = {"leaderboard": "paths.leaderboard_dir", "records": "paths.records_root", "zoo": "paths.zoo_dir"}[what]
    if key in values:
        return Path(values[key])
    if what == "zoo":
        return Path(values.get("paths.root_dir", workspace_root())) / "models"
    return Path(values.get("paths.output_root", workspace_root() / "outputs")) / what


def read_table(path: Path) -> list[dict[str, str]]:
    """A committed table's rows (none when it is not there yet)."""
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def table_text(columns: Sequence[str], rows: Iterable[Mapping[str, object]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_extras(paper, rows, records_root: Path, out: Path, corruption_rows, kept: list[dict[str, str]],
                 table) -> None:
    """The paper's summaries and figures. They are built from per-sample records, which this machine has only for
    what it measured: where the table kept committed rows, a summary CSV keeps the committed lines of the datasets
    it kept, a figure is left as committed, and nothing is rebuilt when a kept row shares a dataset with a new one
    (that dataset's summary would be built from part of its models)."""
    if not kept:
        for path, text in paper.extra(rows, records_root, out, corruption_rows):
            if text is not None:
                atomic_write(path, text)
            print(f"paper {paper.name}: wrote {path}")
        return
    kept_datasets = {r.get("dataset", "") for r in kept}
    if kept_datasets & {str(r.get("dataset", "")) for r in table}:
        print(f"paper {paper.name}: summaries left as committed: this machine measured part of "
              f"{', '.join(sorted(kept_datasets))}; rerun that dataset's experiment here to rebuild them")
        return
    with tempfile.TemporaryDirectory() as scratch:
        for path, text in paper.extra(rows, records_root, Path(scratch) / out.name, corruption_rows):
            final = out.with_name(path.name)
            if text is None:
                print(f"paper {paper.name}: {final} left as committed: it also shows {', '.join(sorted(kept_datasets))}, "
                      f"whose per-sample records are not on this machine")
                continue
            fresh = list(csv.DictReader(io.StringIO(text)))
            order = {flag: i for i, flag in enumerate(paper.datasets)}
            merged = sorted([*fresh, *kept_rows(("dataset",), read_table(final), fresh)],  # stable: lines keep order
                            key=lambda r: order.get(str(r.get("dataset", "")), len(order)))
            atomic_write(final, table_text(next(csv.reader(io.StringIO(text))), merged))
            print(f"paper {paper.name}: wrote {final} (kept the committed lines of {', '.join(sorted(kept_datasets))})")


def write_table(paper, leaderboard_dir: Path, records_root: Path, out: Path, zoo_dir: Path | None = None) -> int:
    """The table, then the paper's further outputs (each file written whole or not at all). Committed rows this
    machine measured nothing for (by the paper's ``kept_by`` columns) are kept, and said so."""
    rows = [row for path in track_files(leaderboard_dir) for row in read_rows(path)]
    table = paper.table(zoo_dir or workspace_root() / "models") if paper.table is not None else build_table(paper, rows)
    if not table:
        where = f"the zoo {zoo_dir}" if paper.table is not None else leaderboard_dir
        raise BenchError(f"no results of {paper.experiment!r} in {where}; run the experiment first "
                         f"(python scripts/paper.py {paper.name}).")
    kept = kept_rows(paper.kept_by, read_table(out), table)
    if kept:
        groups = sorted({" ".join(r.get(k, "") for k in paper.kept_by) for r in kept})
        print(f"paper {paper.name}: kept {len(kept)} committed rows this machine has no results for: {'; '.join(groups)}")
    atomic_write(out, table_text(paper.columns, sort_table(paper, [*table, *kept]) if kept else table))
    if paper.extra is not None:
        from bench.leaderboard.corruption import CORRUPTION

        corruption_rows = [row for path in CORRUPTION.files(leaderboard_dir) for row in CORRUPTION.read(path)]
        write_extras(paper, study_rows(paper, rows), records_root, out, corruption_rows, kept, table)
    return len(table) + len(kept)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paper", nargs="?", help=f"one of: {', '.join(PAPERS.names())}")
    parser.add_argument("--list", action="store_true", help="list the reproduced papers")
    parser.add_argument("--datasets", help="comma-separated flags (default: the paper's)")
    parser.add_argument("--table-only", action="store_true", help="only rebuild the table from existing rows")
    parser.add_argument("--leaderboard-dir", help="where the runs wrote their rows (default: paths.leaderboard_dir, "
                        "following a paths.output_root= or paths.leaderboard_dir= override)")
    parser.add_argument("--records-root", help="where the runs wrote their records (default: paths.records_root, "
                        "following the same overrides)")
    parser.add_argument("--out", help="the table (default results/paper/<paper>.csv, or the path the study declares)")
    argv = sys.argv[1:] if argv is None else argv
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []  # Hydra overrides for every job
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.list or not args.paper:
        for name, paper in PAPERS.items():
            print(f"{name}: experiment={paper.experiment}, datasets {', '.join(paper.datasets)}")
        return 0
    try:
        paper = PAPERS[args.paper]
        flags = args.datasets.split(",") if args.datasets else list(paper.datasets)
        for flag in flags:
            dataset_info(flag)  # a typo fails before any run
        if not args.table_only:
            data_root = default_root()
            ran = [flag for flag in flags if run_dataset(paper, flag, overrides, data_root)]
            if not ran:
                raise BenchError(f"none of {', '.join(flags)} could be loaded; put their files in the data root "
                                 f"({data_root}) or set MEDMNIST_ROOT.")
        out = Path(args.out) if args.out else paper.output(workspace_root())
        n = write_table(paper, Path(args.leaderboard_dir or output_dir_of(overrides, "leaderboard")),
                        Path(args.records_root or output_dir_of(overrides, "records")), out,
                        output_dir_of(overrides, "zoo"))
    except (BenchError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"paper {paper.name}: {n} rows -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
