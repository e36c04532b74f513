"""The leaderboard as one self-contained, sortable and filterable HTML page (inline CSS and JS, no network).

Every row shows its evaluation's rank and admission status (with the reasons as a
tooltip), its battery and n. The page opens on the ranked evaluations' worst-case
rows; unticking the filters shows the unranked evaluations and every attack row.
The table scrolls inside its own box, so the page itself fits a 1400-pixel window.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from bench.leaderboard.admission import RULES
from bench.checks import CHECKS
from bench.report.page_assets import CSS, JS
from bench.report.tracks import (
    FLAG_HELP, REGENERATE, UNKNOWN_FLAG_HELP, RankedEntry, Row, Track, eps_key, eps_text, flag_list, fmt, fmt_ci,
    is_battery, num, ranking_rows,
)

# (column, header, numeric?) of the page's table: the columns a reader ranks by first, then the secondary ones.
HTML_COLUMNS = (
    ("rank", "rank", True), ("status", "status", False), ("dataset", "dataset", False), ("norm", "norm", False),
    ("eps", "eps", True), ("model", "model", False), ("defense", "defense", False), ("attack", "attack", False),
    ("battery", "battery", False), ("n", "n", True), ("clean_acc", "clean acc", True),
    ("robust_acc", "robust acc [95% CI]", True), ("flags", "flags", False),
    # secondary
    ("reported_robust_acc", "reported", True), ("unreliable", "unreliable", False), ("adaptive", "adaptive attacks", False),
    ("asr", "ASR [95% CI]", True), ("clean_auc", "clean AUC", True), ("adv_auc", "adv AUC", True),
    ("kind", "kind", False), ("size", "size", True), ("train", "training", False), ("date", "date", False),
    ("git_commit", "commit", False), ("config_hash", "config", False),
)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _code(text: str) -> str:
    """Escape, then turn `backticked` spans into <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(text))


def _flag_badges(flags: Iterable[str]) -> str:
    badges = []
    for f in flags:
        cls = f if f in FLAG_HELP else "unknown"
        css = re.sub(r"[^A-Za-z0-9_-]", "_", cls)
        blocking = " blocking" if f in CHECKS and CHECKS[f].blocks_ranking else ""
        title = _e(f"{f}: {FLAG_HELP.get(f, UNKNOWN_FLAG_HELP)}")
        badges.append(f'<span class="flag flag-{css}{blocking}" title="{title}">{_e(f)}</span>')
    return "".join(badges)


def _html_cell(col: str, numeric: bool, r: Row, entry: RankedEntry) -> str:
    """One ``<td>``: what is shown, and a ``data-sort`` key the page's script sorts on."""
    sort, title, css = r.get(col, ""), "", []
    if col == "rank":
        sort = shown = "" if entry.rank is None else str(entry.rank)
    elif col == "status":
        ranked = entry.admission.ranked
        sort = shown = "ranked" if ranked else "unranked"
        title = "meets every admission rule" if ranked else "not ranked: " + "; ".join(entry.admission.reasons)
        if not ranked:
            shown = f"unranked: {entry.admission.reasons[0]}"
        css.append("ranked" if ranked else "unranked")
    elif col == "eps":
        sort, shown = eps_key(r), eps_text(r)
    elif col in ("robust_acc", "asr"):
        shown = fmt_ci(r[col], r[f"{col}_lo"], r[f"{col}_hi"])
    elif col in ("clean_acc", "clean_auc", "adv_auc", "reported_robust_acc"):
        shown = fmt(r[col])
    elif col == "adaptive":
        shown = r[col].replace(";", ", ")
    elif col == "flags":
        return f'<td data-col="flags" data-sort="{_e(r["flags"])}">{_flag_badges(flag_list(r["flags"]))}</td>'
    elif col == "git_commit":
        shown, title = r[col][:10], r[col]
    elif col == "model":
        shown = r[col]
        title = f"arch={r['arch']} recipe={r['recipe']} seed={r['seed']} weights_sha256={r['weights_sha256'][:16]}"
    elif col == "train":
        shown, title = r[col], r[col]
        css.append("clip")
    else:
        shown = r.get(col, "")
    if numeric and num(sort) is None:
        sort = ""
    if numeric:
        css.append("num")
    attrs = f' data-col="{col}" data-sort="{_e(sort)}"' + (f' class="{" ".join(css)}"' if css else "")
    attrs += f' title="{_e(title)}"' if title else ""
    return f"<td{attrs}>{_e(shown)}</td>"


def _html_order(item: tuple[Row, RankedEntry]) -> tuple:
    r, e = item
    return (r["dataset"], num(r["size"]) or 0.0, r["norm"], e.rank is None, e.rank or 0, r["model"], r["defense"],
            r["config_hash"], not is_battery(r), r["attack"], num(r["eps"]) or 0.0)


def _rules_html() -> str:
    rules = "".join(f"<li><b>{_e(r.name)}</b>: {_code(r.text)}</li>" for r in RULES.values())
    checks = "".join(
        f"<tr><td>{_flag_badges([c.name])}</td><td>{_e(c.scope)}</td><td>{'yes' if c.blocks_ranking else 'no (warning)'}</td>"
        f"<td>{_e(c.threshold)}</td></tr>"
        for c in CHECKS.values()
    )
    return (f'<details id="rules" class="note" open><summary>Admission rules: what is ranked</summary>'
            f"<p>An evaluation is ranked only when all of these hold; every other one is kept, never ranked, and "
            f"shown (with the reason in its status) when <i>ranked only</i> is unticked.</p><ol>{rules}</ol>"
            f'<details><summary>checks and their thresholds</summary><div class="table-wrap"><table class="checks">'
            f"<thead><tr><th>check</th><th>scope</th><th>blocks ranking</th><th>fires when</th></tr></thead>"
            f"<tbody>{checks}</tbody></table></div></details></details>")


def _corruption_html(paths: Sequence[Path]) -> str:
    """One static table per corruption track (MedMNIST-C): an evaluation per line, ranked by mean balanced error."""
    from bench.leaderboard.corruption import CORRUPTION, corruption_table

    sections = []
    for path in paths:
        rows = CORRUPTION.read(path)
        if not rows:
            continue
        header, body = corruption_table(rows)
        first = rows[0]
        head = "".join(f'<th scope="col">{_e(h)}</th>' for h in header)
        lines = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>" for cells in body)
        sections.append(
            f'<h3>{_e(first["dataset"])} {_e(first["size"])}x{_e(first["size"])}</h3>'
            f'<div class="table-wrap"><table class="corruptions" data-track="{_e(path.stem)}"><thead><tr>{head}</tr>'
            f"</thead><tbody>{lines}</tbody></table></div>")
    if not sections:
        return ""
    return ('<section id="corruptions"><h2>Common corruptions (MedMNIST-C)</h2><p class="note">Balanced error '
            "(1 - balanced accuracy; lower is better) under each of the dataset's MedMNIST-C corruptions, averaged "
            "over five severities; <i>mean BE</i> averages every corruption and severity [95% bootstrap interval] and "
            "ranks an evaluation of the whole test split at every corruption and severity. Rows come from "
            "<code>python scripts/corrupt.py ...</code>; per-severity rows, accuracy, AUC and image checksums are in "
            f"the <code>*_corruptions.csv</code> files.</p>{''.join(sections)}</section>")


def render_html(tracks: Sequence[Track], source: str = "results/leaderboard",
                corruption_paths: Sequence[Path] = ()) -> str:
    """The whole leaderboard as one self-contained page (inline CSS and JS, no network)."""
    rows: list[tuple[Row, RankedEntry]] = []
    primary: set[int] = set()
    for t in tracks:
        for entry in ranking_rows(t.rows)[1]:
            rows += [(r, entry) for r in entry.evaluation.rows]
            primary |= {id(r) for r in entry.evaluation.primary_rows}
    rows.sort(key=_html_order)
    datasets = sorted({r["dataset"] for r, _ in rows})
    threats: dict[str, dict[str, str]] = {}
    for r, _ in rows:
        threats.setdefault(r["norm"], {})[f"{r['norm']}|{eps_key(r)}"] = eps_text(r)
    threat_options = []
    for norm in sorted(threats):
        threat_options.append(f'<option value="{_e(norm)}">{_e(norm)} (every eps)</option>')
        for value, label in sorted(threats[norm].items(), key=lambda kv: (num(kv[0].split("|", 1)[1]) or 0.0, kv[0])):
            threat_options.append(f'<option value="{_e(value)}">{_e(norm)} eps={_e(label)}</option>')

    head = "".join(
        f'<th data-col="{c}" data-type="{"num" if n else "text"}" tabindex="0" scope="col">'
        f'{_e(h)}<span class="ind"></span></th>'
        for c, h, n in HTML_COLUMNS
    )
    body = []
    for r, entry in rows:
        flagged = " flagged" if flag_list(r["flags"]) else ""
        cells = "".join(_html_cell(c, n, r, entry) for c, _, n in HTML_COLUMNS)
        body.append(
            f'<tr class="row{flagged}" data-dataset="{_e(r["dataset"])}" data-norm="{_e(r["norm"])}" '
            f'data-threat="{_e(r["norm"] + "|" + eps_key(r))}" data-kind="{_e(r["kind"])}" '
            f'data-primary="{int(id(r) in primary)}" data-ranked="{int(entry.admission.ranked)}">{cells}</tr>'
        )
    dataset_options = "".join(f'<option value="{_e(d)}">{_e(d)}</option>' for d in datasets)
    legend = "".join(f"<li>{_flag_badges([f])} {_e(text)}</li>" for f, text in FLAG_HELP.items())
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>medbench leaderboard</title>
<style>{CSS}</style>
</head>
<body>
<h1>medbench leaderboard</h1>
<p class="note">Generated by <code>{_e(REGENERATE)}</code> from <code>{_e(source)}/*.csv</code>; rows come from
<code>python scripts/attack.py ...</code> runs promoted by <code>python scripts/promote.py</code> (a row's config
hash identifies its run). Click a header to sort (again to reverse). Battery rows are the per-sample worst case over
a battery of attacks.</p>
{_rules_html()}
<div class="controls">
<label>dataset <select id="filter-dataset"><option value="">all</option>{dataset_options}</select></label>
<label>threat model <select id="filter-threat"><option value="">all</option>{"".join(threat_options)}</select></label>
<label title="untick to show the evaluations the admission rules keep unranked">
<input type="checkbox" id="filter-ranked" checked> ranked only</label>
<label title="an evaluation's worst-case rows (or a single attack's rows); untick for every attack">
<input type="checkbox" id="filter-battery" checked> battery rows only</label>
<span id="row-count" class="note"></span>
</div>
<div class="table-wrap" id="table-wrap">
<table id="leaderboard">
<thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody>
</table>
</div>
<details class="note"><summary>flags</summary><ul>{legend}</ul></details>
{_corruption_html(corruption_paths)}
<script>{JS}</script>
</body>
</html>
"""
