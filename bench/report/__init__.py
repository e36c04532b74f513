"""Reports derived from the leaderboard CSVs: Markdown tables, one static HTML page, PNG figures.

Everything here is a pure function of ``results/leaderboard/*.csv`` (and of the
``examples.npz`` files a run leaves), so the committed results can always be
regenerated with ``python scripts/leaderboard.py`` and a rerun on the same input
gives byte-identical files (no timestamps). :func:`write_all` renders every
output in memory first and writes only when all of it succeeded, each file
atomically, so a malformed CSV leaves the previous results untouched.

One module per job: :mod:`~bench.report.tracks` loads, formats and ranks the CSV rows,
:mod:`~bench.report.markdown` renders the README block, :mod:`~bench.report.page` the HTML page
(its CSS and JS in :mod:`~bench.report.page_assets`), :mod:`~bench.report.figures` the PNGs, and
:mod:`bench.atomic` writes files. Matplotlib is imported only inside the plotting
functions: :func:`example_grid` is plain numpy because the W&B logger calls it too.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench.atomic import atomic_write
from bench.report.figures import (
    DELTA_CAPTION, MIN_PANEL_PIXELS, example_grid, examples_figure_name, load_examples, plot_robust_vs_eps,
    render_example_grid, save_example_grid,
)
from bench.report.markdown import (
    MARK_END, MARK_START, README_INTRO, render_markdown, render_track_markdown, update_readme_block,
)
from bench.report.page import HTML_COLUMNS, render_html
from bench.report.tracks import (
    FLAG_HELP, REGENERATE, UNKNOWN_FLAG_HELP, RankedEntry, ReportError, Row, Track, eps_key, eps_text, flag_list, fmt,
    fmt_ci, is_battery, load_tracks, num, ranking_rows,
)


def _display(path: Path) -> str:
    from bench.config import REPO_ROOT

    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def write_all(leaderboard_dir: str | Path, records_root: str | Path, out: str | Path) -> list[Path]:
    """Render README block, HTML page and figures into ``out``; return the written paths.

    Everything is rendered before the first write, so a bad CSV (LeaderboardSchemaError) or a broken
    README block or examples.npz (ReportError) changes nothing. Existing figures that this input cannot regenerate are
    kept. Only the examples.npz of evaluations with rows in ``leaderboard_dir`` are drawn; when several map to one
    figure name, the last one in path order wins.
    """
    leaderboard_dir, records_root, out = Path(leaderboard_dir), Path(records_root), Path(out)
    if not leaderboard_dir.is_dir():  # a typo must not replace the tables with "no tracks yet"
        raise ReportError(
            f"leaderboard folder {leaderboard_dir} does not exist. Runs (`medbench attack ...`) write their rows to "
            "outputs/leaderboard/ and `medbench promote` copies admitted ones into results/leaderboard/; render "
            "your local rows with --leaderboard-dir outputs/leaderboard --out outputs/report, or pass the folder "
            "that holds the track CSVs."
        )
    from bench.leaderboard.certified import certified_files
    from bench.leaderboard.corruption import CORRUPTION

    tracks = load_tracks(leaderboard_dir)
    source = _display(leaderboard_dir)
    readme = out / "README.md"
    existing = readme.read_text() if readme.exists() else None
    outputs: dict[Path, str | bytes] = {
        readme: update_readme_block(existing, render_markdown(tracks, source, certified_files(leaderboard_dir),
                                                              CORRUPTION.files(leaderboard_dir))),
        out / "leaderboard.html": render_html(tracks, source, CORRUPTION.files(leaderboard_dir)),
    }
    figures = out / "figures"
    for t in tracks:
        if t.rows:
            outputs[figures / f"robust_vs_eps_{t.name}.png"] = plot_robust_vs_eps(t)
    # only the records of evaluations on this leaderboard (<config_hash>-<weights sha256[:8]>): a local, unpromoted
    # run must not redraw a committed figure
    shown = {f"{r['config_hash']}-{r['weights_sha256'][:8]}" for t in tracks for r in t.rows}
    grids: dict[Path, tuple[str, bytes]] = {}  # records folder -> (figure name, png)
    for npz in sorted(records_root.glob("**/examples.npz")) if records_root.exists() else []:
        if npz.parent.name not in shown:
            continue
        try:
            data = load_examples(npz)
            grids[npz.parent] = (examples_figure_name(data, npz), render_example_grid(data))
        except (OSError, KeyError, ValueError, IndexError) as err:
            raise ReportError(
                f"{npz}: cannot draw its example grid ({type(err).__name__}: {err}); it needs arrays clean (k,C,H,W), "
                "adv (E,k,C,H,W), eps_labels (E,). Fix or delete the file; nothing was written."
            ) from err
    for name, png in _disambiguated(grids).items():
        outputs[figures / name] = png
    return [atomic_write(path, data) for path, data in outputs.items()]


def _disambiguated(grids: dict[Path, tuple[str, bytes]]) -> dict[str, bytes]:
    """Figure name -> png, where evaluations that would share a name (one model id and seed trained twice, e.g. a
    reference row and a zoo row with other weights) each get their weights' id, so neither overwrites the other."""
    counts = Counter(name for name, _ in grids.values())
    named: dict[str, bytes] = {}
    for folder, (name, png) in grids.items():
        if counts[name] > 1:
            name = name.removesuffix(".png") + "_w" + folder.name.rsplit("-", 1)[-1] + ".png"
        named[name] = png
    return named


__all__ = [
    "FLAG_HELP", "MARK_END", "MARK_START", "RankedEntry", "ReportError", "Track", "atomic_write", "example_grid",
    "load_tracks", "plot_robust_vs_eps", "ranking_rows", "render_example_grid", "render_html", "render_markdown",
    "save_example_grid", "update_readme_block", "write_all",
]
