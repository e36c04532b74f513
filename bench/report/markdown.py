"""The generated leaderboard block of results/README.md: a ranking and a detail table per track."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from bench.leaderboard.admission import rules_markdown
from bench.leaderboard.certified import certified_markdown
from bench.leaderboard.corruption import corruption_markdown
from bench.report.findings import findings_markdown
from bench.report.tracks import (
    REGENERATE, RankedEntry, ReportError, Row, Track, eps_text, flag_list, fmt, fmt_ci, is_battery, num, ranking_rows,
)

MARK_START = "<!-- leaderboard:start -->"
MARK_END = "<!-- leaderboard:end -->"
README_INTRO = (
    "# Results\n\n"
    "Measured results of medbench: leaderboard CSVs (`leaderboard/`, one per track: dataset x size x norm),\n"
    "the interactive page [`leaderboard.html`](leaderboard.html) and figures (`figures/`).\n"
    "Text outside the leaderboard markers below is hand-written and kept when the tables are regenerated.\n"
)


def _md(text: str) -> str:
    """A table cell: pipes escaped, newlines folded, so a CSV value cannot break the table."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _md_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(c) for c in cells) + " |" for cells in body]
    return lines


def _md_flags(flags: Iterable[str]) -> str:
    return ", ".join(f"`{f}`" for f in flags)


def _detail_order(r: Row) -> tuple:
    return (r["model"], r["defense"], r["config_hash"], not is_battery(r), r["attack"], num(r["eps"]) or 0.0)


def _eps_cells(entry: RankedEntry, columns: Sequence[tuple[str, str]]) -> list[str]:
    cells = []
    for key, _ in columns:
        r = entry.by_eps.get(key)
        cell = "" if r is None else fmt_ci(r["robust_acc"], r["robust_acc_lo"], r["robust_acc_hi"])
        if r is not None and r.get("reported_robust_acc"):
            cell += f" (reported {fmt(r['reported_robust_acc'])})"  # the authors' number beside ours
        cells.append(cell)
    return cells


def render_track_markdown(track: Track) -> str:
    """The ranking, the unranked evaluations with their reasons, and the every-attack detail table of one track."""
    lines = [f"## {track.title}", ""]
    if not track.rows:
        return "\n".join(lines + [f"_No rows yet in `{track.path.name}`._", ""])
    columns, entries = ranking_rows(track.rows)
    ranked = [e for e in entries if e.ranked]
    unranked = [e for e in entries if not e.ranked]
    eps_header = [f"eps {label}" for _, label in columns]
    lines += [
        f"![robust accuracy vs epsilon, {track.title}](figures/robust_vs_eps_{track.name}.png)",
        "",
        "Ranking of the evaluations that meet the admission rules (above), by the standard battery's robust "
        "accuracy (per-sample worst case) at the largest epsilon, then the next. Robust accuracy: value "
        "[95% bootstrap CI]. Warnings are flags that do not block ranking.",
        "",
    ]
    if ranked:
        header = ["rank", "model", "defense", "arch", "battery", "adaptive", "n", "clean_acc", *eps_header, "warnings",
                  "config_hash", "weights"]
        body = [[str(e.rank), e.model, e.defense, e.arch, e.attack, e.adaptive, e.n, fmt(e.clean_acc), *_eps_cells(e, columns),
                 _md_flags(e.admission.warnings), e.config_hash, e.evaluation.weights_sha256[:8]] for e in ranked]
        lines += _md_table(header, body)
    else:
        lines += ["_No evaluation in this track meets the admission rules yet._"]
    if unranked:
        lines += ["", f"**Unranked** ({len(unranked)}): kept in `{track.path.name}`, never ranked, for the reason given.", ""]
        header = ["model", "defense", "battery or attack", "adaptive", "n", "clean_acc", *eps_header, "why unranked",
                  "config_hash", "weights"]
        body = [[e.model, e.defense, e.attack, e.adaptive, e.n, fmt(e.clean_acc), *_eps_cells(e, columns),
                 "; ".join(e.admission.reasons), e.config_hash, e.evaluation.weights_sha256[:8]] for e in unranked]
        lines += _md_table(header, body)
    lines += ["", f"<details><summary>Every attack row of {track.title} ({len(track.rows)} rows)</summary>", ""]
    detail_header = ["model", "train", "defense", "attack", "eps", "n", "robust_acc", "asr", "clean_auc", "adv_auc",
                     "linf_median", "l2_median", "queries_median", "flags", "unreliable", "config_hash"]
    detail = [
        [r["model"], r["train"], r["defense"], r["attack"], eps_text(r), r["n"],
         fmt_ci(r["robust_acc"], r["robust_acc_lo"], r["robust_acc_hi"]), fmt_ci(r["asr"], r["asr_lo"], r["asr_hi"]),
         fmt(r["clean_auc"]), fmt(r["adv_auc"]), fmt(r["linf_median"], 4), fmt(r["l2_median"], 4),
         fmt(r["queries_median"], 0), _md_flags(flag_list(r["flags"])), r.get("unreliable", ""), r["config_hash"]]
        for r in sorted(track.rows, key=_detail_order)
    ]
    lines += _md_table(detail_header, detail) + ["", "</details>", ""]
    return "\n".join(lines)


def render_markdown(tracks: Sequence[Track], source: str = "results/leaderboard",
                    certified_paths: Sequence[Path] = (), corruption_paths: Sequence[Path] = ()) -> str:
    """The generated block of results/README.md, markers included: the rules, the checks, then every track."""
    lines = [
        MARK_START,
        "<!-- Generated: do not edit between these markers; the next run overwrites it. -->",
        "",
        f"Generated by `{REGENERATE}` from `{source}/*.csv`. Rows come from `python scripts/attack.py ...` runs, "
        "promoted here by `python scripts/promote.py`; a row's `config_hash` identifies the run (it is in that "
        "run's `summary.json`). Interactive, sortable table: [`leaderboard.html`](leaderboard.html).",
        "",
        "### Admission rules",
        "",
        *rules_markdown(),
        "",
    ]
    if not tracks:
        lines += [f"_No leaderboard tracks yet: `{source}` holds no CSV._", ""]
    for t in tracks:
        lines += [render_track_markdown(t), *findings_markdown(t)]
    for path in certified_paths:
        lines += certified_markdown(path)
    for path in corruption_paths:
        lines += corruption_markdown(path)
    return "\n".join(lines).rstrip("\n") + "\n" + MARK_END + "\n"


def update_readme_block(existing: str | None, block: str) -> str:
    """Put ``block`` between the markers of ``existing`` (hand-written text kept); new file if None."""
    if existing is None:
        return README_INTRO + "\n" + block
    start, end = existing.find(MARK_START), existing.find(MARK_END)
    if start == -1 and end == -1:
        return existing.rstrip("\n") + "\n\n" + block
    if start == -1 or end == -1 or end < start:
        raise ReportError(
            f"results README has a broken leaderboard block ({MARK_START!r} at {start}, {MARK_END!r} at {end}); "
            "restore both markers, in that order, or delete both to append a fresh block."
        )
    return existing[:start] + block.rstrip("\n") + existing[end + len(MARK_END):]
