"""Defense findings, computed from a track's rows: what each defense is worth against its undefended model.

Two questions a reader of a defended row asks first, answered with the rows' own numbers and 95% bootstrap
intervals (so the README's findings are regenerated with the tables and can never drift from them):

- does the defense beat the undefended model of the same recipe and seed at :data:`FINDINGS_EPS`, with
  intervals that do not overlap?
- for a defense evaluated with adaptive attacks (BPDA, EoT, transfer): how robust does it look under the
  battery's plain gradient attacks alone, and what is left after the adaptive ones (Athalye et al. 2018)?

Only standard-battery evaluations on a whole split are compared; rows are strings as stored in the CSVs.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.checks import BLACK_BOX_KINDS
from bench.leaderboard.admission import Evaluation, admit, group_evaluations, unreliable_flags
from bench.report.tracks import Row, Track, eps_key, fmt, fmt_ci, num

FINDINGS_EPS = "2/255"
UNDEFENDED = ("", "none")


def _standard(ev: Evaluation) -> bool:
    return ev.first("battery") == "standard" and bool(ev.battery_rows)


def _at(rows: Sequence[Row], eps: str) -> list[Row]:
    return [r for r in rows if eps_key(r) == eps or r.get("eps_label") == eps]


def _battery_row(ev: Evaluation, eps: str) -> Row | None:
    return next(iter(_at(ev.battery_rows, eps)), None)


def _recipe(ev: Evaluation) -> tuple[str, str, str]:
    return (ev.first("arch"), ev.first("recipe"), ev.first("seed"))


def _undefended_for(ev: Evaluation, undefended: Sequence[Evaluation]) -> Evaluation | None:
    """The undefended evaluation to compare ``ev`` with: of the very weights it runs, if there is one (an input
    transform wraps the undefended model itself, and a zoo retrained on another machine can hold other weights
    for the same recipe and seed); otherwise of the same architecture, recipe and seed, a ranked one if any,
    else the last."""
    same = [u for u in undefended if _recipe(u) == _recipe(ev)]
    same_weights = [u for u in same if u.weights_sha256 and u.weights_sha256 == ev.weights_sha256]
    ranked = [u for u in same if admit(u).ranked]
    return (same_weights or ranked or same or [None])[-1]


def _interval(row: Row) -> tuple[float, float] | None:
    lo, hi = num(row.get("robust_acc_lo")), num(row.get("robust_acc_hi"))
    return None if lo is None or hi is None else (lo, hi)


def _verdict(defended: Row, undefended: Row) -> str:
    d, u = _interval(defended), _interval(undefended)
    if d is None or u is None:
        return "no intervals"
    if d[0] > u[1]:
        return "**yes**, intervals apart"
    if d[1] < u[0]:
        return "no: *lower*, intervals apart"
    return "not shown: intervals overlap"


def _qualified(verdict: str, ev: Evaluation) -> str:
    """A win measured by an evaluation a check found flawed is not called one: its attacks left samples a weaker
    attack broke, so its robust accuracy is likely too high (Carlini et al. 2019)."""
    flawed = unreliable_flags(ev)
    if flawed and verdict.startswith("**yes**"):
        return f"not shown: intervals apart, but the evaluation is unreliable ({', '.join(flawed)})"
    return verdict


def _ranked_text(ev: Evaluation) -> str:
    admission = admit(ev)
    return "yes" if admission.ranked else f"no (fails rule: {', '.join(admission.failed)})"


def _weights_text(ev: Evaluation, base: Evaluation | None) -> str:
    """Both evaluations' weights, so a reader sees when an input transform's undefended comparison ran over other
    weights of the same recipe and seed (a zoo retrained on another CPU kind gives other bits)."""
    mine, theirs = (ev.weights_sha256 or "?")[:8], ((base.weights_sha256 or "?")[:8] if base else "-")
    return f"`{mine}` / `{theirs}`"


def _comparison_table(track: Track, defended: Sequence[Evaluation], undefended: Sequence[Evaluation]) -> list[str]:
    lines = [f"Robust accuracy at {FINDINGS_EPS} (worst case over the standard battery and the adaptive attacks), "
             "against the undefended model of the same architecture, recipe and seed:", "",
             "| defense | model | clean acc | robust acc [95% CI] | undefended [95% CI] | beats undefended? | ranked "
             "| weights: defense / undefended |",
             "|---|---|---:|---:|---:|---|---|---|"]
    for ev in defended:
        row, base = _battery_row(ev, FINDINGS_EPS), _undefended_for(ev, undefended)
        base_row = _battery_row(base, FINDINGS_EPS) if base else None
        if row is None:
            continue
        mine = fmt_ci(row["robust_acc"], row.get("robust_acc_lo"), row.get("robust_acc_hi"))
        theirs = fmt_ci(base_row["robust_acc"], base_row.get("robust_acc_lo"), base_row.get("robust_acc_hi")) \
            if base_row else "not evaluated"
        verdict = _qualified(_verdict(row, base_row), ev) if base_row else "-"
        lines.append(f"| {ev.defense} | {ev.model} | {fmt(row.get('clean_acc'))} | {mine} | {theirs} | {verdict} "
                     f"| {_ranked_text(ev)} | {_weights_text(ev, base)} |")
    return lines + [""]


def _plain_white_box(ev: Evaluation, adaptive: set[str], eps: str) -> Row | None:
    """The last plain gradient row at ``eps``: sequential rows are cumulative, so it is their worst case."""
    rows = [r for r in _at(ev.rows, eps) if r.get("kind") != "battery" and r["attack"] not in adaptive
            and r.get("kind") not in BLACK_BOX_KINDS]
    return rows[-1] if rows else None


def _adaptive_table(ev: Evaluation) -> list[str]:
    """Per epsilon: the plain gradient attacks' worst case, then each later attack in run order, then the final row.

    Sequential batteries attack only what is still robust, so each cell is the robust accuracy after that
    attack and everything before it: reading left to right shows which attack broke the defense.
    """
    adaptive = {a for a in ev.first("adaptive").split(";") if a}
    if not adaptive:
        return []
    epsilons = list(dict.fromkeys(eps_key(r) for r in ev.battery_rows))
    attacks = [r["attack"] for r in ev.rows if r.get("kind") != "battery"]
    plain_names = [a for a in dict.fromkeys(attacks)
                   if a not in adaptive and all(r.get("kind") not in BLACK_BOX_KINDS for r in ev.rows if r["attack"] == a)]
    later = [a for a in dict.fromkeys(attacks) if a not in plain_names]
    lines = [f"`{ev.defense}` on {ev.model}, robust accuracy after each attack in run order "
             f"(plain gradient attacks: {', '.join(plain_names)}; adaptive: {', '.join(sorted(adaptive))}):", "",
             "| eps | plain gradient attacks [95% CI] | " + " | ".join(f"+ {a}" for a in later)
             + " | final row [95% CI] |",
             "|---|---:|" + "---:|" * len(later) + "---:|"]
    for eps in epsilons:
        plain = _plain_white_box(ev, adaptive, eps)
        final = _battery_row(ev, eps)
        if plain is None or final is None:
            continue
        cells = [fmt(next((r["robust_acc"] for r in _at(ev.rows, eps) if r["attack"] == a), None)) for a in later]
        lines.append(f"| {final.get('eps_label') or eps} | "
                     f"{fmt_ci(plain['robust_acc'], plain.get('robust_acc_lo'), plain.get('robust_acc_hi'))} | "
                     + " | ".join(cells) + " | "
                     f"{fmt_ci(final['robust_acc'], final.get('robust_acc_lo'), final.get('robust_acc_hi'))} |")
    return lines + [""]


def findings_markdown(track: Track) -> list[str]:
    """The "Defense findings" lines of one track; empty when it has no standard-battery evaluation of a defense."""
    evaluations = [ev for ev in group_evaluations(track.rows) if _standard(ev)]
    undefended = [ev for ev in evaluations if ev.defense in UNDEFENDED]
    defended = [ev for ev in evaluations if ev.defense not in UNDEFENDED]
    if not defended:
        return []
    lines = [f"### Defense findings: {track.title}", ""]
    lines += _comparison_table(track, defended, undefended)
    for ev in defended:
        lines += _adaptive_table(ev)
    return lines
