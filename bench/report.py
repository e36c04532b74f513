"""Reports derived from the leaderboard CSVs: Markdown tables, one static HTML page, PNG figures.

Everything here is a pure function of ``results/leaderboard/*.csv`` (and of the
``examples.npz`` files a run leaves), so the committed results can always be
regenerated with ``python scripts/leaderboard.py`` and a rerun on the same input
gives byte-identical files (no timestamps). :func:`write_all` renders every
output in memory first and writes only when all of it succeeded, each file
atomically, so a malformed CSV leaves the previous results untouched.

Matplotlib is imported only inside the plotting functions: :func:`example_grid`
is plain numpy because the W&B logger calls it too.
"""

from __future__ import annotations

import html
import io
import math
import os
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.errors import BenchError
from bench.leaderboard import read_rows

Row = Mapping[str, str]

MARK_START = "<!-- leaderboard:start -->"
MARK_END = "<!-- leaderboard:end -->"
README_INTRO = (
    "# Results\n\n"
    "Measured results of medbench: leaderboard CSVs (`leaderboard/`, one per track: dataset x size x norm),\n"
    "the interactive page [`leaderboard.html`](leaderboard.html) and figures (`figures/`).\n"
    "Text outside the leaderboard markers below is hand-written and kept when the tables are regenerated.\n"
)
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

# Per-sample "magnified perturbation" panels: max |delta| of each panel maps to full range, grey = 0.
DELTA_CAPTION = "perturbation magnified: each panel scaled so max |delta| is full range, grey 0.5 = no change"
MIN_PANEL_PIXELS = 112  # upscale small images (28x28 -> 112x112) so single pixels stay visible


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


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------
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


def render_track_markdown(track: Track) -> str:
    """The ranking table and the every-attack detail table of one track."""
    lines = [f"## {track.title}", ""]
    if not track.rows:
        return "\n".join(lines + [f"_No rows yet in `{track.path.name}`._", ""])
    columns, entries = ranking_rows(track.rows)
    battery = any(is_battery(r) for r in track.rows)
    lines += [
        f"![robust accuracy vs epsilon, {track.title}](figures/robust_vs_eps_{track.name}.png)",
        "",
        ("Ranking of the battery rows (per-sample worst case over the battery)" if battery
         else "Ranking of all rows (this track has no battery rows)")
        + ", by robust accuracy at the largest epsilon, then the next. Robust accuracy: value [95% bootstrap CI].",
        "",
    ]
    header = ["rank", "model", "defense", "arch", "attack", "n", "clean_acc"]
    header += [f"eps {label}" for _, label in columns] + ["flags", "config_hash"]
    body = []
    for e in entries:
        cells = [str(e.rank), e.model, e.defense, e.arch, e.attack, e.n, fmt(e.clean_acc)]
        for key, _ in columns:
            r = e.by_eps.get(key)
            cells.append("" if r is None else fmt_ci(r["robust_acc"], r["robust_acc_lo"], r["robust_acc_hi"]))
        body.append(cells + [_md_flags(e.flags), e.config_hash])
    lines += _md_table(header, body)
    lines += ["", f"<details><summary>Every attack row of {track.title} ({len(track.rows)} rows)</summary>", ""]
    detail_header = ["model", "defense", "attack", "eps", "robust_acc", "asr", "clean_auc", "adv_auc",
                     "linf_median", "l2_median", "queries_median", "flags", "config_hash"]
    detail = [
        [r["model"], r["defense"], r["attack"], eps_text(r),
         fmt_ci(r["robust_acc"], r["robust_acc_lo"], r["robust_acc_hi"]), fmt_ci(r["asr"], r["asr_lo"], r["asr_hi"]),
         fmt(r["clean_auc"]), fmt(r["adv_auc"]), fmt(r["linf_median"], 4), fmt(r["l2_median"], 4),
         fmt(r["queries_median"], 0), _md_flags(flag_list(r["flags"])), r["config_hash"]]
        for r in sorted(track.rows, key=_detail_order)
    ]
    lines += _md_table(detail_header, detail) + ["", "</details>", ""]
    return "\n".join(lines)


def render_markdown(tracks: Sequence[Track], source: str = "results/leaderboard") -> str:
    """The generated block of results/README.md, markers included."""
    lines = [
        MARK_START,
        "<!-- Generated: do not edit between these markers; the next run overwrites it. -->",
        "",
        f"Generated by `{REGENERATE}` from `{source}/*.csv`. Rows come from `python scripts/attack.py ...` runs; "
        "a row's `config_hash` identifies the run (it is in that run's `summary.json`). "
        "Interactive, sortable table: [`leaderboard.html`](leaderboard.html).",
        "",
        "Flags (from `bench/checks.py`) mark numbers not to trust without a look:",
        "",
        *(f"- `{name}`: {text}" for name, text in FLAG_HELP.items()),
        "",
    ]
    if not tracks:
        lines += [f"_No leaderboard tracks yet: `{source}` holds no CSV._", ""]
    lines += [render_track_markdown(t) for t in tracks]
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


# --------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------
# (column, header, numeric?) of the page's table.
HTML_COLUMNS = (
    ("dataset", "dataset", False), ("size", "size", True), ("norm", "norm", False), ("eps", "eps", True),
    ("model", "model", False), ("defense", "defense", False), ("attack", "attack", False), ("kind", "kind", False),
    ("n", "n", True), ("clean_acc", "clean acc", True), ("robust_acc", "robust acc [95% CI]", True),
    ("flags", "flags", False), ("asr", "ASR [95% CI]", True), ("clean_auc", "clean AUC", True),
    ("adv_auc", "adv AUC", True), ("date", "date", False), ("git_commit", "commit", False),
    ("config_hash", "config", False),
)

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .3em}
.controls{display:flex;gap:1.2em;align-items:center;flex-wrap:wrap;margin:.8em 0}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #ddd;padding:.25em .4em;text-align:left;white-space:nowrap}
th{background:#f3f3f3;cursor:pointer;user-select:none;position:sticky;top:0}
th:hover{background:#e6e6e6}
th .ind{display:inline-block;width:1em;color:#06c}
td.num{text-align:right}
tr.flagged td{background:#fff4f2}
.flag{display:inline-block;border-radius:.7em;padding:0 .55em;margin-right:.25em;font-size:.85em;color:#fff;
 background:#c0392b;cursor:help}
.flag.flag-robust_acc_rises_with_eps{background:#d68910}
.flag.flag-nondeterministic{background:#7d3c98}
.flag.flag-unknown{background:#555}
.note{color:#666;font-size:.9em}
"""

_JS = r"""
(function () {
  var table = document.getElementById('leaderboard');
  var tbody = table.tBodies[0];
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var sorted = {col: -1, dir: 1};
  function value(tr, i, numeric) {
    var v = tr.cells[i].getAttribute('data-sort') || '';
    if (v === '') return null;
    if (!numeric) return v;
    var x = parseFloat(v);
    return isNaN(x) ? null : x;
  }
  function sortBy(i) {
    var numeric = heads[i].getAttribute('data-type') === 'num';
    var dir = (sorted.col === i && sorted.dir === 1) ? -1 : 1;
    sorted = {col: i, dir: dir};
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.sort(function (a, b) {  // Array.sort is stable: ties keep their current order
      var x = value(a, i, numeric), y = value(b, i, numeric);
      if (x === null || y === null) return (x === null) - (y === null);  // empty cells last, both ways
      return dir * (x < y ? -1 : x > y ? 1 : 0);
    });
    rows.forEach(function (r) { tbody.appendChild(r); });
    heads.forEach(function (h) { h.removeAttribute('aria-sort'); h.querySelector('.ind').textContent = ''; });
    heads[i].setAttribute('aria-sort', dir === 1 ? 'ascending' : 'descending');
    heads[i].querySelector('.ind').textContent = dir === 1 ? '\u25B2' : '\u25BC';
  }
  heads.forEach(function (th, i) {
    th.addEventListener('click', function () { sortBy(i); });
    th.addEventListener('keydown', function (e) {
      if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortBy(i); }
    });
  });
  var dataset = document.getElementById('filter-dataset');
  var threat = document.getElementById('filter-threat');
  var battery = document.getElementById('filter-battery');
  var count = document.getElementById('row-count');
  function applyFilters() {
    var shown = 0, rows = tbody.rows;
    for (var k = 0; k < rows.length; k++) {
      var r = rows[k];
      var t = threat.value;
      var ok = (!dataset.value || r.getAttribute('data-dataset') === dataset.value)
        && (!t || r.getAttribute('data-norm') === t || r.getAttribute('data-threat') === t)
        && (!battery.checked || r.getAttribute('data-primary') === '1');
      r.hidden = !ok;
      if (ok) shown++;
    }
    count.textContent = shown + ' of ' + rows.length + ' rows shown';
  }
  [dataset, threat, battery].forEach(function (el) { el.addEventListener('change', applyFilters); });
  applyFilters();
})();
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _flag_badges(flags: Iterable[str]) -> str:
    badges = []
    for f in flags:
        cls = f if f in FLAG_HELP else "unknown"
        css = re.sub(r"[^A-Za-z0-9_-]", "_", cls)
        title = _e(f"{f}: {FLAG_HELP.get(f, UNKNOWN_FLAG_HELP)}")
        badges.append(f'<span class="flag flag-{css}" title="{title}">{_e(f)}</span>')
    return "".join(badges)


def _html_cell(col: str, numeric: bool, r: Row) -> str:
    """One ``<td>``: what is shown, and a ``data-sort`` key the page's script sorts on."""
    sort, title = r.get(col, ""), ""
    if col == "eps":
        sort, shown = eps_key(r), eps_text(r)
    elif col in ("robust_acc", "asr"):
        shown = fmt_ci(r[col], r[f"{col}_lo"], r[f"{col}_hi"])
    elif col in ("clean_acc", "clean_auc", "adv_auc"):
        shown = fmt(r[col])
    elif col == "flags":
        return f'<td data-col="flags" data-sort="{_e(r["flags"])}">{_flag_badges(flag_list(r["flags"]))}</td>'
    elif col == "git_commit":
        shown, title = r[col][:10], r[col]
    elif col == "model":
        shown = r[col]
        title = f"arch={r['arch']} recipe={r['recipe']} seed={r['seed']} weights_sha256={r['weights_sha256'][:16]}"
    else:
        shown = r.get(col, "")
    if numeric and num(sort) is None:
        sort = ""
    attrs = f' data-col="{col}" data-sort="{_e(sort)}"' + (' class="num"' if numeric else "")
    attrs += f' title="{_e(title)}"' if title else ""
    return f"<td{attrs}>{_e(shown)}</td>"


def _html_order(r: Row) -> tuple:
    return (r["dataset"], num(r["size"]) or 0.0, r["norm"], r["model"], r["defense"], r["config_hash"],
            not is_battery(r), r["attack"], num(r["eps"]) or 0.0)


def render_html(tracks: Sequence[Track], source: str = "results/leaderboard") -> str:
    """The whole leaderboard as one self-contained page (inline CSS and JS, no network)."""
    rows: list[tuple[Row, bool]] = []
    for t in tracks:
        primary = {id(r) for r in primary_rows(t.rows)}
        rows += [(r, id(r) in primary) for r in t.rows]
    rows.sort(key=lambda rp: _html_order(rp[0]))
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
    for r, primary in rows:
        flagged = " flagged" if flag_list(r["flags"]) else ""
        cells = "".join(_html_cell(c, n, r) for c, _, n in HTML_COLUMNS)
        body.append(
            f'<tr class="row{flagged}" data-dataset="{_e(r["dataset"])}" data-norm="{_e(r["norm"])}" '
            f'data-threat="{_e(r["norm"] + "|" + eps_key(r))}" data-kind="{_e(r["kind"])}" '
            f'data-primary="{int(primary)}">{cells}</tr>'
        )
    dataset_options = "".join(f'<option value="{_e(d)}">{_e(d)}</option>' for d in datasets)
    legend = "".join(f"<li>{_flag_badges([f])} {_e(text)}</li>" for f, text in FLAG_HELP.items())
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>medbench leaderboard</title>
<style>{_CSS}</style>
</head>
<body>
<h1>medbench leaderboard</h1>
<p class="note">Generated by <code>{_e(REGENERATE)}</code> from <code>{_e(source)}/*.csv</code>; rows come from
<code>python scripts/attack.py ...</code> runs (a row's config hash identifies its run). Click a header to sort
(again to reverse). Battery rows are the per-sample worst case over a battery of attacks; tracks without one
show all rows.</p>
<div class="controls">
<label>dataset <select id="filter-dataset"><option value="">all</option>{dataset_options}</select></label>
<label>threat model <select id="filter-threat"><option value="">all</option>{"".join(threat_options)}</select></label>
<label title="tracks without battery rows show all their rows">
<input type="checkbox" id="filter-battery" checked> battery rows only</label>
<span id="row-count" class="note"></span>
</div>
<table id="leaderboard">
<thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody>
</table>
<details class="note"><summary>flags</summary><ul>{legend}</ul></details>
<script>{_JS}</script>
</body>
</html>
"""


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------
def _figure():  # matplotlib only here: Figure objects need no pyplot state and no display
    from matplotlib.figure import Figure

    return Figure


def _png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def _series_label(key: tuple[str, str, str, str], keys: Sequence[tuple[str, str, str, str]]) -> str:
    """model (+defense); the attack and config hash only where needed to tell lines apart."""
    model, defense, attack, config = key
    label = model if defense in ("", "none") else f"{model} + {defense}"
    same = [k for k in keys if k[:2] == key[:2]]
    if len(same) > 1:
        label += f" [{attack}]"
        if len([k for k in same if k[2] == attack]) > 1:
            label += f" {config[:7]}"
    return label


def plot_robust_vs_eps(track: Track) -> bytes:
    """PNG bytes: robust accuracy vs epsilon per model/defense (95% CI band), clean accuracy at eps = 0."""
    columns, entries = ranking_rows(track.rows)
    fig = _figure()(figsize=(7.0, 4.5))
    ax = fig.add_subplot()
    keys = [(e.model, e.defense, e.attack, e.config_hash) for e in entries]
    for e, key in zip(entries, keys):
        xs, ys, lo, hi = [], [], [], []
        clean = num(e.clean_acc)
        if clean is not None:
            xs.append(0.0), ys.append(clean), lo.append(clean), hi.append(clean)
        for k, _ in columns:
            r = e.by_eps.get(k)
            y = None if r is None else num(r["robust_acc"])
            if r is None or y is None or not math.isfinite(num(k) or math.nan):
                continue  # an unbounded budget has no place on a linear axis
            xs.append(float(k)), ys.append(y)
            lo.append(num(r["robust_acc_lo"]) if num(r["robust_acc_lo"]) is not None else y)
            hi.append(num(r["robust_acc_hi"]) if num(r["robust_acc_hi"]) is not None else y)
        (line,) = ax.plot(xs, ys, marker="o", label=_series_label(key, keys))
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.18, linewidth=0)
    ticks = [(0.0, "0\n(clean)")] + [(float(k), label) for k, label in columns if math.isfinite(num(k) or math.nan)]
    ax.set_xticks([t for t, _ in ticks], [label for _, label in ticks], rotation=45 if len(ticks) > 6 else 0)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"epsilon ({track.norm})")
    ax.set_ylabel("robust accuracy")
    kind = "battery worst case" if any(is_battery(r) for r in track.rows) else "every attack"
    ax.set_title(f"{track.title}: robust accuracy vs epsilon ({kind}; band = 95% CI)", fontsize=10)
    ax.grid(alpha=0.3)
    if entries:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _png_bytes(fig)


def _rgb(img: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, 3) in [0, 1]; grey images are repeated, extra channels dropped."""
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 2:
        img = img[None]
    img = np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img[:3]
    return np.clip(img.transpose(1, 2, 0), 0.0, 1.0)


def _delta_panel(delta: np.ndarray, magnify: float | None) -> np.ndarray:
    """Perturbation as an image centred at grey 0.5; auto scale maps max |delta| to the full range."""
    if magnify is None:
        peak = float(np.abs(delta).max())
        scale = 0.5 / peak if peak > 0 else 0.0
    else:
        scale = 0.5 * float(magnify)
    return 0.5 + delta * scale


def _grid_panels(clean: np.ndarray, adv: np.ndarray, magnify: float | None) -> list[list[np.ndarray]]:
    """Rows of (H, W, 3) float panels: clean, then per epsilon the adversarial image and its perturbation."""
    clean, adv = np.asarray(clean, dtype=np.float64), np.asarray(adv, dtype=np.float64)
    if clean.ndim != 4 or adv.ndim != 5 or adv.shape[1:] != clean.shape:
        raise ValueError(f"example_grid expects clean (k,C,H,W) and adv (E,k,C,H,W); got {clean.shape} and {adv.shape}")
    rows = [[_rgb(c) for c in clean]]
    for per_eps in adv:
        rows.append([_rgb(a) for a in per_eps])
        rows.append([np.clip(_delta_panel(_rgb(a) - _rgb(c), magnify), 0.0, 1.0) for a, c in zip(per_eps, clean)])
    return rows


def _upscale_factor(height: int, width: int) -> int:
    return max(1, math.ceil(MIN_PANEL_PIXELS / max(1, min(height, width))))


def example_grid(clean: np.ndarray, adv: np.ndarray, eps_labels: Sequence[str], magnify: float | None = None,
                 pad: int = 2) -> np.ndarray:
    """Adversarial examples as one uint8 (H, W, 3) image; numpy only (the W&B logger calls it too).

    Columns are samples. Rows: clean, then for each epsilon (in ``eps_labels`` order) the adversarial
    image and the perturbation magnified: ``magnify=None`` scales each panel so max |delta| maps to
    the full range around grey 0.5 (grey = unchanged); a number multiplies delta by it instead.
    Panels are upscaled (nearest) so a 28x28 image is readable, with ``pad`` white pixels between.
    """
    if len(eps_labels) != np.asarray(adv).shape[0]:
        raise ValueError(f"{len(eps_labels)} eps labels for {np.asarray(adv).shape[0]} epsilons")
    panels = _grid_panels(clean, adv, magnify)
    h, w = panels[0][0].shape[:2]
    f = _upscale_factor(h, w)
    ph, pw = h * f, w * f
    n_rows, n_cols = len(panels), len(panels[0])
    grid = np.ones((n_rows * (ph + pad) - pad, n_cols * (pw + pad) - pad, 3))
    for i, row in enumerate(panels):
        for j, panel in enumerate(row):
            big = panel.repeat(f, axis=0).repeat(f, axis=1)
            grid[i * (ph + pad):i * (ph + pad) + ph, j * (pw + pad):j * (pw + pad) + pw] = big
    return np.round(grid * 255).astype(np.uint8)


def _label_text(value: np.ndarray) -> str:
    """A class index as ``3``; a multi-label vector as its bits ``0101``."""
    value = np.asarray(value)
    return str(int(value)) if value.ndim == 0 else "".join(str(int(v)) for v in value.ravel())


def _scalar(data: Mapping[str, np.ndarray], key: str, default: str = "") -> str:
    return str(data[key][()]) if key in data else default


def render_example_grid(data: Mapping[str, np.ndarray]) -> bytes:
    """PNG bytes of one examples.npz: the grid panels with eps labels, labels and predictions as titles."""
    clean, adv = np.asarray(data["clean"]), np.asarray(data["adv"])
    labels = [str(x) for x in np.asarray(data["eps_labels"]).ravel()]
    panels = _grid_panels(clean, adv, None)
    f = _upscale_factor(*clean.shape[2:])
    n_rows, n_cols = len(panels), len(panels[0])
    fig = _figure()(figsize=(1.45 * n_cols + 0.9, 1.5 * n_rows + 0.7))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    y, clean_pred, adv_pred = data.get("labels"), data.get("clean_pred"), data.get("adv_pred")
    for i, row in enumerate(panels):
        for j, panel in enumerate(row):
            ax = axes[i][j]
            ax.imshow(panel.repeat(f, 0).repeat(f, 1), interpolation="nearest", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                title = f"y={_label_text(y[j])}" if y is not None else ""
                title += f" pred={_label_text(clean_pred[j])}" if clean_pred is not None else ""
                ax.set_title(title.strip(), fontsize=8)
            elif i % 2 == 1 and adv_pred is not None:
                pred, before = adv_pred[(i - 1) // 2][j], None if clean_pred is None else clean_pred[j]
                changed = before is not None and not np.array_equal(pred, before)
                ax.set_title(f"pred={_label_text(pred)}", fontsize=8, color="#c0392b" if changed else "black")
            if j == 0:
                ax.set_ylabel("clean" if i == 0 else (f"adv {labels[(i - 1) // 2]}" if i % 2 == 1
                                                      else f"delta {labels[(i - 1) // 2]}"), fontsize=8)
    name = " ".join(_scalar(data, k) for k in ("dataset", "size", "model", "attack", "norm")).strip()
    caption = textwrap.fill(f"red prediction: changed by the attack. delta rows: {DELTA_CAPTION}.",
                            width=max(40, int(18 * n_cols)))
    fig.suptitle(f"{name}\n{caption}", fontsize=8)
    fig.tight_layout()
    return _png_bytes(fig)


def load_examples(npz_path: str | Path) -> dict[str, np.ndarray]:
    with np.load(npz_path, allow_pickle=False) as data:  # never unpickle a file from somebody else
        return {k: data[k] for k in data.files}


def examples_figure_name(data: Mapping[str, np.ndarray], npz_path: str | Path) -> str:
    parts = [_scalar(data, k) for k in ("dataset", "size", "model")]
    stem = "_".join(parts) if all(parts) else Path(npz_path).parent.name
    return "examples_" + re.sub(r"[^A-Za-z0-9_.+-]", "_", stem) + ".png"


def save_example_grid(npz_path: str | Path, png_path: str | Path) -> Path:
    """Render ``npz_path`` (an examples.npz) to ``png_path`` with titles, atomically."""
    return atomic_write(png_path, render_example_grid(load_examples(npz_path)))


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------
def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write to a temporary file beside ``path`` and rename it over, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


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
    kept. When several examples.npz map to one figure name, the last one in path order wins.
    """
    leaderboard_dir, records_root, out = Path(leaderboard_dir), Path(records_root), Path(out)
    if not leaderboard_dir.is_dir():  # a typo must not replace the tables with "no tracks yet"
        raise ReportError(
            f"leaderboard folder {leaderboard_dir} does not exist; pass --leaderboard-dir, or create tracks first "
            "with python scripts/attack.py (it appends to results/leaderboard/<dataset>_<size>_<norm>.csv)."
        )
    tracks = load_tracks(leaderboard_dir)
    source = _display(leaderboard_dir)
    readme = out / "README.md"
    existing = readme.read_text() if readme.exists() else None
    outputs: dict[Path, str | bytes] = {
        readme: update_readme_block(existing, render_markdown(tracks, source)),
        out / "leaderboard.html": render_html(tracks, source),
    }
    figures = out / "figures"
    for t in tracks:
        if t.rows:
            outputs[figures / f"robust_vs_eps_{t.name}.png"] = plot_robust_vs_eps(t)
    for npz in sorted(records_root.glob("**/examples.npz")) if records_root.exists() else []:
        try:
            data = load_examples(npz)
            outputs[figures / examples_figure_name(data, npz)] = render_example_grid(data)
        except (OSError, KeyError, ValueError, IndexError) as err:
            raise ReportError(
                f"{npz}: cannot draw its example grid ({type(err).__name__}: {err}); it needs arrays clean (k,C,H,W), "
                "adv (E,k,C,H,W), eps_labels (E,). Fix or delete the file; nothing was written."
            ) from err
    return [atomic_write(path, data) for path, data in outputs.items()]


__all__ = [
    "FLAG_HELP", "MARK_END", "MARK_START", "RankedEntry", "ReportError", "Track", "atomic_write", "example_grid",
    "load_tracks", "plot_robust_vs_eps", "ranking_rows", "render_example_grid", "render_html", "render_markdown",
    "save_example_grid", "update_readme_block", "write_all",
]
