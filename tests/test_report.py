"""Reporting layer: README tables, the static HTML page in real headless Chromium, figures, example grids.

The page is checked in a real browser (Debian's ``chromium`` + ``chromium-driver``, installed by
``.ci/run``) through the small WebDriver client in tests/browser.py. Without Chromium the browser
test is skipped locally but fails under CI=true, never passing silently.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.leaderboard import LeaderboardSchemaError, track_path, upsert_rows
from bench.leaderboard.admission import standard_battery
from bench.report import (
    MARK_END, MARK_START, ReportError, Track, example_grid, load_tracks, ranking_rows, render_html, render_markdown,
    save_example_grid, update_readme_block, write_all,
)

from tests.browser import INSTALL_HINT, Browser, find_chromium
from tests.conftest import STANDARD_EPS, board_row, evaluation_rows

REPO = Path(__file__).resolve().parent.parent
DATASETS = ("breastmnist", "pneumoniamnist")
FULL_TEST = {"breastmnist": 156, "pneumoniamnist": 624}
MODELS = ("resnet18_28", "vit_tiny")
EPS = STANDARD_EPS
ATTACKS = (("apgd_ce", "gradient"), ("square_linf", "score"), ("battery:standard", "battery"))
FLAGS = "zero_grad;robust_acc_rises_with_eps"
FLAGGED = ("pneumoniamnist", "vit_tiny", "battery:standard", "2/255")  # the one flagged row: its model is unranked


def synthetic_row(dataset: str, model: str, attack: str, kind: str, eps: float, label: str) -> dict:
    """A standard-battery, full-split leaderboard row whose robust accuracy falls with eps and differs by model."""
    i = EPS.index((eps, label))
    base = {"resnet18_28": 0.62, "vit_tiny": 0.55}[model] + (0.05 if dataset == "breastmnist" else 0.0)
    robust = round(base - 0.11 * i - (0.03 if kind == "battery" else 0.0) - (0.01 if attack == "apgd_ce" else 0), 3)
    return board_row(
        dataset=dataset, model=model, arch=model.split("_")[0], recipe=model, attack=attack, kind=kind, eps=eps,
        eps_label=label, n=FULL_TEST[dataset], battery_hash=standard_battery("linf")[1],
        clean_acc=round(base + 0.2, 3), robust_acc=robust, robust_acc_lo=round(robust - 0.07, 3),
        robust_acc_hi=round(robust + 0.07, 3), asr=round(1 - robust / (base + 0.2), 3), asr_lo=0.1, asr_hi=0.9,
        clean_auc=0.9, adv_auc=round(0.9 - 0.1 * i, 3), linf_median=eps, l2_median=0.5 * i,
        queries_median=100 if kind == "score" else "",
        flags=FLAGS if (dataset, model, attack, label) == FLAGGED else "",
        config_hash=f"cfg{MODELS.index(model)}",
    )


def write_synthetic(leaderboard_dir: Path) -> list[dict]:
    rows = [synthetic_row(d, m, a, k, e, lab) for d in DATASETS for m in MODELS for a, k in ATTACKS for e, lab in EPS]
    for dataset in DATASETS:
        upsert_rows(track_path(leaderboard_dir, dataset, 28, "linf"), [r for r in rows if r["dataset"] == dataset])
    return rows


def write_examples(path: Path, k: int = 3, n_eps: int = 2) -> None:
    rng = np.random.default_rng(0)
    clean = rng.random((k, 1, 28, 28), dtype=np.float32)
    budgets = np.array([2 / 255, 8 / 255])[:n_eps]
    delta = rng.uniform(-1, 1, (n_eps, k, 1, 28, 28)) * budgets[:, None, None, None, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path, clean=clean, adv=np.clip(clean + delta, 0, 1).astype(np.float32), eps=budgets,
        eps_labels=np.array(["2/255", "8/255"][:n_eps]), labels=np.arange(k) % 2, clean_pred=np.arange(k) % 2,
        adv_pred=np.ones((n_eps, k), dtype=np.int64), dataset=np.array("breastmnist"), size=np.array("28"),
        model=np.array("resnet18_28"), attack=np.array("apgd_ce"), norm=np.array("linf"),
    )


def assert_png(path: Path, size: tuple[int, int] | None = None) -> Image.Image:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    image = Image.open(io.BytesIO(data))
    image.load()
    if size is not None:
        assert image.size == size
    lo, hi = zip(*image.convert("RGB").getextrema())
    assert max(hi) - min(lo) > 50, f"{path} looks blank (extrema {image.getextrema()})"
    return image


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict:
    """Synthetic tracks + one examples.npz, rendered once into a fresh out dir with a hand-written README."""
    root = tmp_path_factory.mktemp("report")
    rows = write_synthetic(root / "leaderboard")
    from bench.leaderboard.corruption import CORRUPTION
    from tests.test_corruptions import corruption_rows

    names = ["pixelate", "jpeg_compression", "speckle_noise", "motion_blur", "brightness_up", "brightness_down",
             "contrast_down", "gaussian_noise", "impulse_noise", "shot_noise", "gamma_corr_up", "gamma_corr_down"]
    CORRUPTION.upsert(CORRUPTION.path(root / "leaderboard", "pneumoniamnist", 28),
                      corruption_rows("resnet18_28", 0.3, names, n=624, dataset="pneumoniamnist"))
    # examples are drawn for the evaluations on the leaderboard only (folder <config_hash>-<weights sha[:8]>)
    first = next(r for r in rows if r["model"] == "resnet18_28")
    shown = f"{first['config_hash']}-{str(first['weights_sha256'])[:8]}"
    write_examples(root / "records" / "breastmnist_28" / "resnet18_28" / shown / "examples.npz")
    local_only = root / "records" / "breastmnist_28" / "resnet18_28" / "unpromoted-00000000" / "examples.npz"
    write_examples(local_only)
    np.savez(local_only, **{**dict(np.load(local_only)), "model": np.array("local_model")})
    out = root / "results"
    out.mkdir()
    intro = f"# Our results\n\nHand-written words that must survive.\n\n{MARK_START}\nold\n{MARK_END}\n\nTail text.\n"
    (out / "README.md").write_text(intro)
    written = write_all(root / "leaderboard", root / "records", out)
    return {"root": root, "rows": rows, "out": out, "written": written}


def test_markdown_lists_every_model_keeps_intro_and_is_stable(rendered):
    out, root = rendered["out"], rendered["root"]
    text = (out / "README.md").read_text()
    assert text.startswith("# Our results\n\nHand-written words that must survive.\n\n" + MARK_START)
    assert text.endswith(MARK_END + "\n\nTail text.\n") and "\nold\n" not in text
    assert "python scripts/leaderboard.py" in text and "python scripts/attack.py" in text
    for model in MODELS:
        assert model in text
    for dataset in DATASETS:
        assert f"## {dataset} 28x28 linf" in text
    assert "| 1 | resnet18_28 | none | resnet18 | battery:standard |  | 156 | 0.870 | 0.640 [0.57, 0.71] |" in text
    before = {p: p.read_bytes() for p in rendered["written"]}
    again = write_all(root / "leaderboard", root / "records", out)
    assert again == rendered["written"]
    assert {p: p.read_bytes() for p in again} == before, "a rerun on the same input must give identical bytes"


def test_markdown_prints_the_rules_and_says_why_an_evaluation_is_unranked(rendered):
    text = (rendered["out"] / "README.md").read_text()
    from bench.checks import CHECKS
    from bench.leaderboard.admission import RULES

    for rule in RULES.values():
        assert f"**{rule.name}**: {rule.text}" in text
    for check in CHECKS.values():
        assert f"| `{check.name}` | {check.scope} |" in text and check.threshold in text
    pneumonia = text[text.index("## pneumoniamnist"):]
    ranking, unranked = pneumonia.split("**Unranked** (1)")
    assert "| 1 | resnet18_28 |" in ranking and "vit_tiny" not in ranking.split("<details>")[0]
    assert "| vit_tiny | none | battery:standard |  | 624 |" in unranked and "unreliable: zero_grad" in unranked


def test_readme_block_creates_appends_and_refuses_broken_markers(tmp_path):
    block = render_markdown([])
    assert block.startswith(MARK_START) and block.endswith(MARK_END + "\n") and "No leaderboard tracks yet" in block
    assert update_readme_block(None, block).endswith("\n\n" + block)  # new file: short intro, then the block
    assert update_readme_block("# mine\n", block) == "# mine\n\n" + block
    with pytest.raises(ReportError, match="broken leaderboard block"):
        update_readme_block(f"# mine\n{MARK_START}\nno end\n", block)
    with pytest.raises(ReportError, match="does not exist"):
        write_all(tmp_path / "missing", tmp_path / "records", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_ranking_orders_by_largest_eps_and_uses_battery_rows(rendered):
    tracks = load_tracks(rendered["root"] / "leaderboard")
    columns, entries = ranking_rows(tracks[0].rows)
    assert [label for _, label in columns] == [label for _, label in EPS]
    assert [(e.rank, e.model, e.attack) for e in entries] == [
        (1, "resnet18_28", "battery:standard"), (2, "vit_tiny", "battery:standard")
    ]
    _, pneumonia = ranking_rows(tracks[1].rows)
    assert [(e.rank, e.model) for e in pneumonia] == [(1, "resnet18_28"), (None, "vit_tiny")]
    assert pneumonia[1].admission.reasons == ("unreliable: zero_grad",)
    assert pneumonia[1].admission.warnings == ("robust_acc_rises_with_eps",)


def test_unranked_evaluations_never_outrank_a_standard_full_split_one_whatever_their_numbers():
    """A quick battery, a subset and a constant predictor all score 1.0, and all rank below a 0.05 standard row."""
    honest = evaluation_rows((0.3, 0.2, 0.1, 0.05), model="honest_seed0", config_hash="std")
    quick = evaluation_rows((1.0,) * 4, standard=False, model="smoke_seed0", config_hash="quick")
    subset = evaluation_rows((1.0,) * 4, model="subset_seed0", config_hash="sub", n=64)
    constant = evaluation_rows((1.0,) * 4, model="constant_seed0", config_hash="const", flags="constant_predictor")
    _, entries = ranking_rows(quick + subset + constant + honest)
    assert [(e.rank, e.model) for e in entries][0] == (1, "honest_seed0")
    assert {e.model: e.rank for e in entries[1:]} == {"smoke_seed0": None, "subset_seed0": None, "constant_seed0": None}
    reasons = {e.model: " ".join(e.admission.reasons) for e in entries}
    assert "not the standard battery" in reasons["smoke_seed0"]
    assert "n=64 is a subset of the 156-image test split" in reasons["subset_seed0"]
    assert "flagged constant_predictor" in reasons["constant_seed0"]


def test_html_escapes_csv_text():
    row = synthetic_row("breastmnist", "resnet18_28", "apgd_ce", "gradient", *EPS[0])
    row = {k: str(v) for k, v in row.items()}
    row.update(model="<img src=x onerror=alert(1)>", defense='a"b&c', flags="weird<flag>")
    page = render_html([Track("t", "breastmnist", "28", "linf", Path("t.csv"), (row,))])
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert 'a"b' not in page and "a&quot;b&amp;c" in page and "weird&lt;flag&gt;" in page
    assert "http://" not in page and "https://" not in page, "the page must not load anything from the network"


def test_figures_are_valid_pngs(rendered):
    figures = rendered["out"] / "figures"
    for dataset in DATASETS:
        assert_png(figures / f"robust_vs_eps_{dataset}_28_linf.png")
    assert_png(figures / "examples_breastmnist_28_resnet18_28.png")
    assert not (figures / "examples_breastmnist_28_local_model.png").exists(), "a run not on the leaderboard is not drawn"


def test_robust_vs_eps_lines_join_only_measured_epsilons_and_nothing_is_clipped():
    """A quick battery measured at 2/255 and 8/255 is drawn as points with gaps, never a line across 4/255."""
    from bench.report.figures import robust_vs_eps_figure

    standard = evaluation_rows((0.6, 0.4, 0.2, 0.05), model="standard_seed0", config_hash="std")
    # two more evaluations of the same name and config but other weights: long legend labels must still fit
    twins = [r for w in ("cd" * 32, "ef" * 32)
             for r in evaluation_rows((0.5, 0.3, 0.1, 0.0), model="resnet18_native_seed0", weights_sha256=w)]
    quick = [r for r in evaluation_rows((0.7, 0.5, 0.3, 0.1), standard=False, model="smoke_seed0", config_hash="q",
                                        n=16) if r["eps_label"] in ("2/255", "8/255")]
    track = Track("breastmnist_28_linf", "breastmnist", "28", "linf", Path("t.csv"),
                  tuple({k: str(v) for k, v in r.items()} for r in standard + quick + twins))
    fig = robust_vs_eps_figure(track)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"standard_seed0 (battery:standard, n=156)", "smoke_seed0 (battery:quick, n=16) [unranked]",
                          "resnet18_native_seed0 (battery:standard, n=156) weights cdcdcdcd",
                          "resnet18_native_seed0 (battery:standard, n=156) weights efefefef"}
    smoke = lines["smoke_seed0 (battery:quick, n=16) [unranked]"]
    ys = np.asarray(smoke.get_ydata(), dtype=float)  # clean, 1/255, 2/255, 4/255, 8/255
    assert np.isnan(ys[[1, 3]]).all() and np.isfinite(ys[[0, 2, 4]]).all()
    assert smoke.get_linestyle() == "--" and lines["standard_seed0 (battery:standard, n=156)"].get_linestyle() == "-"
    assert np.isfinite(np.asarray(lines["standard_seed0 (battery:standard, n=156)"].get_ydata(), dtype=float)).all()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # the canvas savefig draws on
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.bbox
    texts = [ax.title, ax.xaxis.label, ax.yaxis.label, *fig.legends[0].get_texts()]
    for text in texts:
        extent = text.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1, \
            f"{text.get_text()!r} is clipped: {extent} outside {box}"


def test_example_grid_shape_and_visible_perturbation(tmp_path):
    npz = tmp_path / "examples.npz"
    write_examples(npz, k=3, n_eps=2)
    data = np.load(npz)
    grid = example_grid(data["clean"], data["adv"], list(data["eps_labels"]))
    panel, pad = 28 * 4, 2  # 28x28 is upscaled 4x to 112x112
    rows, cols = 1 + 2 * 2, 3
    assert grid.dtype == np.uint8 and grid.shape == (rows * (panel + pad) - pad, cols * (panel + pad) - pad, 3)
    delta_row = grid[2 * (panel + pad):2 * (panel + pad) + panel]  # row 0 clean, 1 adv 2/255, 2 its perturbation
    assert np.abs(delta_row.astype(int) - 128).max() > 100, "the magnified perturbation must not be all grey"
    same = example_grid(data["clean"], data["clean"][None], ["0"])
    assert set(np.unique(same[2 * (panel + pad):])) == {128, 255}, "zero delta is plain grey (white padding)"
    assert_png(save_example_grid(npz, tmp_path / "grid.png"))


def test_a_volume_examples_file_renders_its_middle_slice(tmp_path):
    """3D tracks (k, C, D, H, W) draw the middle axial slice of each volume, upscaled like an image."""
    k, depth = 2, 28
    rng = np.random.default_rng(0)
    clean = rng.random((k, 1, depth, 28, 28), dtype=np.float32)
    adv = np.clip(clean + rng.uniform(-1, 1, (1, k, 1, depth, 28, 28)) / 255, 0, 1).astype(np.float32)
    npz = tmp_path / "examples.npz"
    np.savez(npz, clean=clean, adv=adv, eps=np.array([1 / 255]), eps_labels=np.array(["1/255"]),
             labels=np.arange(k) % 2, clean_pred=np.arange(k) % 2, adv_pred=np.ones((1, k), dtype=np.int64),
             dataset=np.array("adrenalmnist3d"), size=np.array("28"), model=np.array("resnet18_native_seed0"))
    grid = example_grid(clean, adv, ["1/255"])
    panel, pad = 28 * 4, 2
    assert grid.shape == (3 * (panel + pad) - pad, k * (panel + pad) - pad, 3)
    assert np.array_equal(grid[:panel:4, :panel:4, 0], np.round(clean[0, 0, depth // 2] * 255).astype(np.uint8))
    assert_png(save_example_grid(npz, tmp_path / "volume.png"))


def test_malformed_csv_names_the_file_and_changes_nothing(tmp_path):
    write_synthetic(tmp_path / "leaderboard")
    bad = tmp_path / "leaderboard" / "pneumoniamnist_28_linf.csv"
    bad.write_text(bad.read_text().replace("robust_acc,", "robust_accuracy,", 1))
    out = tmp_path / "results"
    out.mkdir()
    (out / "README.md").write_text("# mine\n")
    with pytest.raises(LeaderboardSchemaError, match="pneumoniamnist_28_linf.csv"):
        write_all(tmp_path / "leaderboard", tmp_path / "records", out)
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "leaderboard.py"), "--leaderboard-dir", str(tmp_path / "leaderboard"),
         "--records-root", str(tmp_path / "records"), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "pneumoniamnist_28_linf.csv" in proc.stderr and "robust_accuracy" in proc.stderr
    assert (out / "README.md").read_text() == "# mine\n"
    assert sorted(p.name for p in out.iterdir()) == ["README.md"]


# ------------------------------------------------------------------------------------------------
# the page in a real browser
# ------------------------------------------------------------------------------------------------
VISIBLE = "return Array.from(document.querySelectorAll('tr.row')).filter(r => r.offsetParent !== null)"


def chromium_or_skip() -> None:
    if find_chromium() is None:
        message = "chromium and chromedriver are not installed (Debian packages chromium, chromium-driver)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI must install them: {INSTALL_HINT}")
        pytest.skip(f"{message}; install with: {INSTALL_HINT}")


def visible_cells(browser: Browser, col: str) -> list[str]:
    return browser.execute(VISIBLE + f".map(r => r.querySelector('td[data-col={col}]').getAttribute('data-sort'))")


def test_page_in_headless_chromium(rendered, tmp_path):
    chromium_or_skip()
    page = rendered["out"] / "leaderboard.html"
    battery = [r for r in rendered["rows"] if r["kind"] == "battery"]
    ranked_battery = [r for r in battery if (r["dataset"], r["model"]) != FLAGGED[:2]]
    with Browser.start(tmp_path / "browser") as browser:
        browser.get(page.resolve().as_uri())
        shot = browser.screenshot(tmp_path / "leaderboard.png")
        width, height = browser.execute("return [window.innerWidth, window.innerHeight]")
        ratio = browser.execute("return window.devicePixelRatio")
        assert_png(shot, (round(width * ratio), round(height * ratio)))
        assert width == 1400
        # the page fits the window: wide tables scroll inside their own box, never the page
        assert browser.execute("return document.documentElement.scrollWidth") <= width
        for col in ("rank", "status", "model", "battery", "n", "robust_acc", "flags"):
            right = browser.execute(f"return document.querySelector('th[data-col={col}]').getBoundingClientRect().right")
            assert right <= width, f"column {col} is cut off at {right}px"
        assert browser.execute("var w = document.getElementById('table-wrap'); return getComputedStyle(w).overflowX") == "auto"
        # the corruption track: its own table, visible, scrolling inside its box rather than widening the page
        corruption = browser.find("table.corruptions")
        assert browser.displayed(corruption) and "resnet18_28" in browser.text(corruption)
        assert browser.execute("return document.querySelector('table.corruptions').parentElement.getBoundingClientRect()"
                               ".right") <= width
        assert browser.displayed(browser.find("#rules")) and "standard_battery" in browser.text(browser.find("#rules"))

        rows = browser.find_all("tr.row")
        assert len(rows) == len(rendered["rows"])
        assert browser.execute(VISIBLE + ".length") == len(ranked_battery) == 12  # ranked evaluations' worst case
        assert browser.text(browser.find("#row-count")) == f"12 of {len(rendered['rows'])} rows shown"
        assert set(visible_cells(browser, "status")) == {"ranked"} and set(visible_cells(browser, "battery")) == {"standard"}

        browser.click(browser.find("#filter-ranked"))  # the unranked evaluation appears, with its reason
        assert browser.execute(VISIBLE + ".length") == len(battery) == 16
        status = browser.find("tr.row[data-ranked='0'] td[data-col=status]")
        assert browser.text(status).startswith("unranked: unreliable: zero_grad")
        assert "not ranked: unreliable: zero_grad" in browser.attribute(status, "title")
        badge = browser.find("tr.row span.flag.flag-zero_grad")
        assert browser.displayed(badge) and browser.text(badge) == "zero_grad"
        assert "gradients vanish" in browser.attribute(badge, "title")

        header = browser.find("th[data-col=robust_acc]")
        browser.click(header)
        ascending = [float(v) for v in visible_cells(browser, "robust_acc")]
        assert ascending == sorted(ascending) and len(set(ascending)) > 1
        assert browser.attribute(header, "aria-sort") == "ascending"
        browser.click(header)
        descending = [float(v) for v in visible_cells(browser, "robust_acc")]
        assert descending == sorted(ascending, reverse=True)
        assert browser.attribute(header, "aria-sort") == "descending" and browser.text(header).endswith("\u25bc")

        browser.click(browser.find("#filter-dataset option[value=pneumoniamnist]"))
        assert set(visible_cells(browser, "dataset")) == {"pneumoniamnist"}
        assert browser.execute(VISIBLE + ".length") == 8

        browser.click(browser.find("#filter-threat option[value='linf|0.0313725']"))
        assert set(visible_cells(browser, "eps")) == {"0.0313725"} and browser.execute(VISIBLE + ".length") == 2

        browser.click(browser.find("#filter-battery"))  # every attack row of that threat model
        assert browser.execute(VISIBLE + ".length") == 2 * len(ATTACKS)
        browser.screenshot(tmp_path / "filtered.png")


def test_each_defended_model_gets_its_own_examples_figure():
    """Defenses of one backbone share the model id; their example figures must not overwrite each other."""
    from bench.report.figures import examples_figure_name

    meta = {"dataset": np.asarray("breastmnist"), "size": np.asarray("28"), "model": np.asarray("resnet18_native_seed0")}
    undefended = examples_figure_name({**meta, "defense": np.asarray("none")}, "x/examples.npz")
    jpeg = examples_figure_name({**meta, "defense": np.asarray("jpeg(quality=75)")}, "x/examples.npz")
    older = examples_figure_name(meta, "x/examples.npz")  # written before the defense was recorded
    assert undefended == older == "examples_breastmnist_28_resnet18_native_seed0.png"
    assert jpeg == "examples_breastmnist_28_resnet18_native_seed0_jpeg.png"


def test_one_model_id_trained_twice_gets_one_examples_figure_per_weights(tmp_path):
    """A reference row and a zoo row can share model id and seed with other weights: neither figure overwrites the
    other; each is named by its weights' id."""
    rows = write_synthetic(tmp_path / "leaderboard")
    first = next(r for r in rows if r["model"] == "resnet18_28" and r["dataset"] == "breastmnist")
    retrained = {**first, "weights_sha256": "cd" * 32}
    upsert_rows(track_path(tmp_path / "leaderboard", "breastmnist", 28, "linf"), [retrained])
    weights = [str(first["weights_sha256"])[:8], "cdcdcdcd"]
    for w in weights:
        write_examples(tmp_path / "records" / "breastmnist_28" / "resnet18_28" / f"{first['config_hash']}-{w}"
                       / "examples.npz")
    (tmp_path / "results").mkdir()
    write_all(tmp_path / "leaderboard", tmp_path / "records", tmp_path / "results")
    figures = tmp_path / "results" / "figures"
    for w in weights:
        assert_png(figures / f"examples_breastmnist_28_resnet18_28_w{w}.png")
    assert not (figures / "examples_breastmnist_28_resnet18_28.png").exists()
