"""PNG figures: robust accuracy vs epsilon per track, and grids of adversarial examples.

Matplotlib is imported only inside the plotting functions: :func:`example_grid` is plain numpy
because the W&B logger calls it too.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bench.atomic import atomic_write
from bench.report.tracks import RankedEntry, Track, num, ranking_rows

# Per-sample "magnified perturbation" panels: max |delta| of each panel maps to full range, grey = 0.
DELTA_CAPTION = "perturbation magnified: each panel scaled so max |delta| is full range, grey 0.5 = no change"
MIN_PANEL_PIXELS = 112  # upscale small images (28x28 -> 112x112) so single pixels stay visible


def _figure():  # matplotlib only here: Figure objects need no pyplot state and no display
    from matplotlib.figure import Figure

    return Figure


def _png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def _series_label(entry: RankedEntry, entries: Sequence[RankedEntry]) -> str:
    """model (+defense), battery or attack, n; the config hash (or weights) only where needed to tell lines apart."""
    label = entry.model if entry.defense in ("", "none") else f"{entry.model} + {entry.defense}"
    label += f" ({entry.attack}, n={entry.n})"
    twins = [e for e in entries if (e.model, e.defense, e.attack, e.n) == (entry.model, entry.defense, entry.attack, entry.n)]
    if len(twins) > 1:  # tell them apart by run, or by weights when the run's config is the same
        same_config = [e for e in twins if e.config_hash == entry.config_hash]
        label += f" weights {entry.evaluation.weights_sha256[:8]}" if len(same_config) > 1 else f" {entry.config_hash[:7]}"
    return label if entry.ranked else label + " [unranked]"


def robust_vs_eps_figure(track: Track):
    """Robust accuracy vs epsilon per evaluation (95% CI band), clean accuracy at eps = 0, as a matplotlib Figure.

    Lines join only epsilons an evaluation measured: where it lacks one of the track's epsilons the
    line breaks (a lone marker stays), so no value is drawn that nobody measured. Ranked evaluations
    are solid, unranked ones dashed and marked in the legend, which also names n and the battery.
    """
    columns, entries = ranking_rows(track.rows)
    finite = [(k, label) for k, label in columns if math.isfinite(num(k) or math.nan)]  # no place for eps=inf
    fig = _figure()(figsize=(8.0, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for e in entries:
        clean = num(e.clean_acc)
        xs, ys, lo, hi = [0.0], [math.nan if clean is None else clean], [clean], [clean]
        for k, _ in finite:
            r = e.by_eps.get(k)
            y = None if r is None else num(r["robust_acc"])
            xs.append(float(k))
            ys.append(math.nan if y is None else y)
            lo.append(y if r is None or num(r["robust_acc_lo"]) is None else num(r["robust_acc_lo"]))
            hi.append(y if r is None or num(r["robust_acc_hi"]) is None else num(r["robust_acc_hi"]))
        band_lo = [math.nan if v is None else v for v in lo]
        band_hi = [math.nan if v is None else v for v in hi]
        style = {} if e.ranked else {"linestyle": "--", "alpha": 0.75}
        (line,) = ax.plot(xs, ys, marker="o", label=_series_label(e, entries), **style)
        ax.fill_between(xs, band_lo, band_hi, color=line.get_color(), alpha=0.18 if e.ranked else 0.08, linewidth=0)
    ticks = [(0.0, "0\n(clean)")] + [(float(k), label) for k, label in finite]
    ax.set_xticks([t for t, _ in ticks], [label for _, label in ticks], rotation=45 if len(ticks) > 6 else 0)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"epsilon ({track.norm})")
    ax.set_ylabel("robust accuracy")
    ax.set_title(textwrap.fill(f"{track.title}: robust accuracy vs epsilon (worst case over each evaluation's "
                               "battery; band = 95% CI; dashed = unranked)", width=80), fontsize=10)
    ax.grid(alpha=0.3)
    if entries:  # below the axes; two columns only when the labels are short enough to fit side by side
        labels = [_series_label(e, entries) for e in entries]
        wide = len(entries) >= 4 and max(map(len, labels)) <= 48
        fig.legend(fontsize=8, loc="outside lower center", ncols=2 if wide else 1)
    return fig


def plot_robust_vs_eps(track: Track) -> bytes:
    """PNG bytes of :func:`robust_vs_eps_figure`."""
    return _png_bytes(robust_vs_eps_figure(track))


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
    """Rows of (H, W, 3) float panels: clean, then per epsilon the adversarial image and its perturbation.
    Volumes (k, C, D, H, W) show their middle axial slice."""
    clean, adv = np.asarray(clean, dtype=np.float64), np.asarray(adv, dtype=np.float64)
    if clean.ndim == 5 and adv.ndim == 6:
        middle = clean.shape[2] // 2
        clean, adv = clean[:, :, middle], adv[:, :, :, middle]
    if clean.ndim != 4 or adv.ndim != 5 or adv.shape[1:] != clean.shape:
        raise ValueError(f"example_grid expects clean (k,C,H,W) and adv (E,k,C,H,W); got {clean.shape} and {adv.shape} (volumes: (k,C,D,H,W) and (E,k,C,D,H,W))")
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
    f = _upscale_factor(*panels[0][0].shape[:2])  # of the panel: a volume's is its middle slice
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
    name = " ".join(_scalar(data, k) for k in ("dataset", "size", "model", "defense", "attack", "norm")).strip()
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
    defense = (_scalar(data, "defense") or "none").split("(")[0]  # one figure per defended model, not one per backbone
    if all(parts) and defense != "none":
        stem += f"_{defense}"
    return "examples_" + re.sub(r"[^A-Za-z0-9_.+-]", "_", stem) + ".png"


def save_example_grid(npz_path: str | Path, png_path: str | Path) -> Path:
    """Render ``npz_path`` (an examples.npz) to ``png_path`` with titles, atomically."""
    return atomic_write(png_path, render_example_grid(load_examples(npz_path)))
