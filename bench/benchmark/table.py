"""Benchmark rows: the CSV (fixed columns), a JSON sidecar (notes, commands), and the Markdown table.

A run replaces the rows of the (measure, library) pairs it measured and keeps
the others, so ``--measures square`` refreshes the Square rows without
erasing the rest. The Markdown section of a results file lives between
markers in ``results/perf/README.md``; the text around it is kept.
Every file is written atomically (``bench.atomic.atomic_write``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from bench.atomic import atomic_write

COLUMNS = ("measure", "library", "n_images", "n_eps", "steps", "seconds", "images_per_s", "passes_per_s",
           "robust_acc", "peak_mem_mb", "median_queries")
MEASURES = ("limit_forward", "limit_forward_backward", "pgd_fixed", "pgd_4eps", "square", "battery", "scale_images",
            "scale_steps")
# What a run measures unless --measures says otherwise: battery (the whole standard battery against AutoAttack,
# hours on a CPU) runs only when asked for, with its own command (results/perf/README.md).
DEFAULT_MEASURES = tuple(m for m in MEASURES if m != "battery")
LIMIT_MEASURES = ("limit_forward", "limit_forward_backward")
SCALE_MEASURES = ("scale_images", "scale_steps")
# The row each row is compared with: the eager model for the limits, our attack for everything else.
REFERENCE = {"limit_forward": "torch_eager", "limit_forward_backward": "torch_eager"}
DEFAULT_REFERENCE = "ours"
_INT_COLUMNS = ("n_images", "n_eps", "steps")


@dataclass
class Row:
    """One measure of one library. Numbers are None where they do not apply (written as empty cells)."""

    measure: str
    library: str
    n_images: int | None = None
    n_eps: int | None = None
    steps: int | None = None
    seconds: float | None = None
    images_per_s: float | None = None
    passes_per_s: float | None = None
    robust_acc: float | None = None
    peak_mem_mb: float | None = None
    median_queries: float | None = None
    # Not CSV columns: kept in the JSON sidecar and shown in the Markdown.
    note: str = ""
    mean_queries: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, int | None, int | None]:
        return (self.measure, self.library, self.n_images, self.steps)

    def csv_dict(self) -> dict[str, str]:
        out = {}
        for col in COLUMNS:
            value = getattr(self, col)
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                out[col] = ""
            elif isinstance(value, float):
                out[col] = f"{value:.6g}"
            else:
                out[col] = str(value)
        return out

    def sidecar(self) -> dict:
        return {"note": self.note, "mean_queries": self.mean_queries, **self.extra}

    @classmethod
    def from_csv(cls, record: dict[str, str], side: dict | None = None) -> "Row":
        values: dict = {}
        for col in COLUMNS:
            text = record.get(col, "")
            if col in ("measure", "library"):
                values[col] = text
            elif text == "":
                values[col] = None
            else:
                values[col] = int(text) if col in _INT_COLUMNS else float(text)
        side = dict(side or {})
        return cls(**values, note=side.pop("note", "") or "", mean_queries=side.pop("mean_queries", None), extra=side)


def _side_key(row: Row) -> str:
    return "|".join("" if v is None else str(v) for v in row.key)


def to_csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(r.csv_dict() for r in rows)
    return buf.getvalue()


def read_rows(csv_path: Path) -> list[Row]:
    """Rows of an existing results CSV with their sidecar notes; a CSV with other columns is refused."""
    if not csv_path.exists():
        return []
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(
                f"{csv_path} has columns {reader.fieldnames}, expected {list(COLUMNS)}; "
                f"move it away (or delete it) and rerun."
            )
        records = list(reader)
    side_path = csv_path.with_suffix(".json")
    side = json.loads(side_path.read_text()).get("rows", {}) if side_path.exists() else {}
    rows = [Row.from_csv(r) for r in records]
    return [Row.from_csv(r, side.get(_side_key(row))) for r, row in zip(records, rows)]


def sort_rows(rows: list[Row], library_order: list[str]) -> list[Row]:
    rank = {name: i for i, name in enumerate(library_order)}

    def order(r: Row):
        return (MEASURES.index(r.measure) if r.measure in MEASURES else len(MEASURES), rank.get(r.library, len(rank)),
                r.library, r.n_images or 0, r.steps or 0)

    return sorted(rows, key=order)


def merge(old: list[Row], new: list[Row]) -> list[Row]:
    """New rows replace every old row of the same (measure, library); other old rows are kept."""
    replaced = {(r.measure, r.library) for r in new}
    return [r for r in old if (r.measure, r.library) not in replaced] + new


def ratio_to_reference(row: Row, rows: list[Row]) -> float | None:
    """Time per image of ``row`` over that of its reference (ours, or eager torch for limits): > 1 is slower.

    Scale rows compare with the reference at the same number of images and steps.
    """
    ref_lib = REFERENCE.get(row.measure, DEFAULT_REFERENCE)
    for ref in rows:
        if ref.measure == row.measure and ref.library == ref_lib and (
            row.measure not in SCALE_MEASURES or (ref.n_images, ref.steps) == (row.n_images, row.steps)
        ):
            if ref.images_per_s and row.images_per_s:
                return ref.images_per_s / row.images_per_s
            return None
    return None


def slopes(rows: list[Row]) -> list[tuple[str, str, float, float]]:
    """Least-squares fits of the scale rows: (measure, library, slope, intercept).

    scale_images: seconds per image; scale_steps: seconds per step (for all the images).
    """
    out = []
    for measure, x_of in (("scale_images", lambda r: r.n_images), ("scale_steps", lambda r: r.steps)):
        libraries = sorted({r.library for r in rows if r.measure == measure})
        for lib in libraries:
            pts = [(float(x_of(r)), r.seconds) for r in rows if r.measure == measure and r.library == lib
                   and r.seconds is not None and x_of(r) is not None]
            if len({x for x, _ in pts}) < 2:
                continue
            mx = sum(x for x, _ in pts) / len(pts)
            my = sum(y for _, y in pts) / len(pts)
            sxx = sum((x - mx) ** 2 for x, _ in pts)
            slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
            out.append((measure, lib, slope, my - slope * mx))
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def eps_label(text: str) -> str:
    """'0.0156863' -> '4/255' (epsilons are stored as decimals)."""
    k = float(text) * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-3 else text


def best_limit(rows: list[Row]) -> Row | None:
    """The fastest form's forward+backward row: the hardware limit for a PGD step."""
    fb = [r for r in rows if r.measure == "limit_forward_backward" and r.passes_per_s]
    return max(fb, key=lambda r: r.passes_per_s) if fb else None


def render_markdown(rows: list[Row], meta: dict) -> str:
    """The Markdown section of one results file: where, how, the table, the bound, the slopes, the notes."""
    lines = [f"### {meta.get('title', '')}".rstrip(), ""]
    for label in ("machine", "model", "data", "settings"):
        if meta.get(label):
            lines.append(f"- {label}: {meta[label]}")
    for command in meta.get("commands", []):
        lines.append(f"- command: `{command}`")
    lines += ["", "| measure | library | images | eps | steps | runs | seconds | images/s | passes/s | time/image vs ref | robust acc | peak MB | queries median (mean) |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    notes = []
    for r in rows:
        ratio = ratio_to_reference(r, rows)
        queries = "" if r.median_queries is None else f"{r.median_queries:g}" + (
            f" ({r.mean_queries:.1f})" if r.mean_queries is not None else "")
        lines.append(
            f"| {r.measure} | {r.library} | {_fmt(r.n_images, 'd')} | {_fmt(r.n_eps, 'd')} | {_fmt(r.steps, 'd')} | "
            f"{len(r.extra.get('repeats_s', [])) or ''} | "
            f"{_fmt(r.seconds, '.3g')} | {_fmt(r.images_per_s, '.3g')} | {_fmt(r.passes_per_s, '.3g')} | "
            f"{'' if ratio is None else f'{ratio:.2f}x'} | {_fmt(r.robust_acc, '.3f')} | {_fmt(r.peak_mem_mb, '.0f')} | {queries} |"
        )
        if r.note:
            notes.append(f"- {r.measure} / {r.library}: {r.note}")
    best = best_limit(rows)
    if best is not None:
        lines += ["", f"Hardware limit: {best.passes_per_s:.3g} forward+backward image passes per second "
                      f"({best.library}), so a k-step PGD cannot exceed {best.passes_per_s:.3g}/k images per second."]
        for r in rows:
            if r.measure == "pgd_fixed" and r.images_per_s and r.steps:
                bound = best.passes_per_s / r.steps
                lines.append(f"- pgd_fixed / {r.library}: {r.images_per_s:.3g} images/s = {100 * r.images_per_s / bound:.0f}% "
                             f"of the bound {bound:.3g}")
    by_eps = [r for r in rows if r.measure == "pgd_4eps" and r.extra.get("robust_by_eps")]
    if by_eps:
        epsilons = list(by_eps[0].extra["robust_by_eps"])
        lines += ["", "pgd_4eps robust accuracy at each epsilon:", "",
                  "| library | " + " | ".join(eps_label(e) for e in epsilons) + " |", "|---|" + "---:|" * len(epsilons)]
        for r in by_eps:
            lines.append(f"| {r.library} | " + " | ".join(_fmt(r.extra["robust_by_eps"].get(e), ".3f") for e in epsilons) + " |")
    fits = slopes(rows)
    if fits:
        lines += ["", "| scale | library | slope | intercept (s) |", "|---|---|---:|---:|"]
        for measure, lib, slope, intercept in fits:
            unit = "s per image" if measure == "scale_images" else "s per step"
            lines.append(f"| {measure} | {lib} | {slope:.4g} {unit} | {intercept:.3g} |")
    mismatches = dict.fromkeys(f"- {r.library}, {r.extra['mismatch']}" for r in rows if r.extra.get("mismatch"))
    if mismatches:
        lines += ["", "How peers differ from ours where they could not be configured to match:", *mismatches]
    from bench.benchmark.targets import render as render_targets  # targets reads Rows: imported here, no cycle

    lines += render_targets(rows, str(meta.get("title", "cpu")).split("_")[0])
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


README_INTRO = """# Speed benchmark

Written by `scripts/bench_speed.py` (see its `--help`); one section per results
file `<device>_<model>_<dataset>.csv`. Columns: `measure` (limit_forward,
limit_forward_backward, pgd_fixed, pgd_4eps, square, scale_images, scale_steps),
`library` (ours, a peer's package name, or a model form torch_* for the limits),
`seconds` (median of the timed repeats; `runs` in the tables below says how many), `images_per_s`, `passes_per_s` (image
forward+backward passes per second for gradient measures, forward passes for
limit_forward and square), `robust_acc` (fraction of all images still correct;
mean over epsilons for pgd_4eps; for limit rows, our PGD against the model in
that form: the numerics check), `peak_mem_mb` (peak above the memory in use
before the measure: RSS on CPU, allocated tensors on CUDA), `median_queries`
(Square: queries of the samples it fooled). `time/image vs ref` is the time per
image over that of ours (of torch_eager for the limits): above 1 is slower.
scale_images / scale_steps rows time our PGD (and the peers asked for) at
several numbers of images / steps; the slope table fits seconds against them.
"""


def update_readme(readme: Path, stem: str, section: str) -> None:
    """Replace this results file's section of the README (between markers), or append it."""
    start, end = f"<!-- bench_speed:{stem} -->", f"<!-- /bench_speed:{stem} -->"
    text = readme.read_text() if readme.exists() else README_INTRO
    block = f"{start}\n{section}{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write(readme, text)


def write_results(out_dir: Path, stem: str, new_rows: list[Row], meta: dict, library_order: list[str]) -> list[Row]:
    """Merge ``new_rows`` into ``<stem>.csv`` (+ ``<stem>.json``) and refresh the README section; returns all rows."""
    out_dir = Path(out_dir)
    csv_path = out_dir / f"{stem}.csv"
    side_path = csv_path.with_suffix(".json")
    old_meta = json.loads(side_path.read_text()).get("meta", {}) if side_path.exists() else {}
    rows = sort_rows(merge(read_rows(csv_path), new_rows), library_order)
    commands = [c for c in old_meta.get("commands", []) if c != meta.get("command")]
    if {(r.measure, r.library) for r in rows} <= {(r.measure, r.library) for r in new_rows}:
        commands = []  # nothing of the older runs is left
    merged_meta = {**old_meta, **{k: v for k, v in meta.items() if k != "command"},
                   "commands": commands + ([meta["command"]] if meta.get("command") else [])}
    atomic_write(csv_path, to_csv(rows))
    side = {"meta": merged_meta, "rows": {_side_key(r): r.sidecar() for r in rows}}
    atomic_write(side_path, json.dumps(side, indent=1, sort_keys=True) + "\n")
    update_readme(out_dir / "README.md", stem, render_markdown(rows, merged_meta))
    return rows
