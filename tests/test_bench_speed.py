"""The speed benchmark reports the right things: columns, rows, robust accuracy, ratios, notes, merges.

Nothing here asserts a speed. The peer libraries are optional ([compare]
extra): tests that need one skip without it, the rest use ``ours`` only or a
fake library that cannot be imported.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn as nn

from bench.benchmark import COLUMNS, SpeedConfig, run_suite
from bench.benchmark.measure import measure
from bench.benchmark.peers import PEERS, Library, LibraryMissing, PgdSettings, Problem, art_success_queries
from bench.benchmark.suite import LIBRARIES
from bench.benchmark.table import Row, ratio_to_reference, read_rows, render_markdown, slopes, write_results
from bench.benchmark.targets import verdicts
from bench.models import Classifier
from bench.tasks import get_task
from tests.conftest import real_root_or_skip

TASK = get_task("binary-class")
EPSILONS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
# Offsets of each image's constant grey level above the decision threshold, in 1/255 units:
# image i is robust exactly at the epsilons below its offset; the last is misclassified when clean.
OFFSETS = (1.5, 3.0, 6.0, 12.0, -3.0)
ROBUST_BY_EPS = [sum(o > e * 255 for o in OFFSETS) / len(OFFSETS) for e in EPSILONS]  # 0.8, 0.6, 0.4, 0.2


class Threshold(nn.Module):
    """Class 0 when the mean pixel exceeds 0.5: an L-inf attack of size eps moves the mean by exactly eps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x.flatten(1).mean(1) - 0.5) * 1000
        return torch.stack([s, -s], 1)


def threshold_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    x = torch.stack([torch.full((1, 28, 28), 0.5 + o / 255) for o in OFFSETS])
    return Classifier(Threshold(), [0.0], [1.0]).eval(), x, torch.zeros(len(OFFSETS), dtype=torch.long)


def tiny_config(**kw) -> SpeedConfig:
    base = dict(libraries=("ours",), n_images=len(OFFSETS), steps=10, repeats=1, epsilons=EPSILONS, strict=True,
                max_queries=5, scale_sizes=(2, 5), scale_steps=(1, 2), scale_libraries=("ours",),
                forms=("torch_eager", "torch_channels_last"), warmup=False, ours_form="torch_eager")
    base.update(kw)
    return SpeedConfig(**base)


def quiet(_: str) -> None:
    pass


@pytest.mark.parametrize("battery", ["engine", "loop"])
def test_pgd_4eps_robust_accuracy_is_the_mean_over_epsilons_with_clean_errors_non_robust(battery):
    model, x, y = threshold_problem()
    (row,) = run_suite(tiny_config(measures=("pgd_4eps",), ours_battery=battery), model, x, y, TASK, 2, log=quiet)
    assert row.extra["robust_by_eps"] == {f"{e:.6g}": pytest.approx(r) for e, r in zip(EPSILONS, ROBUST_BY_EPS)}
    assert row.robust_acc == pytest.approx(sum(ROBUST_BY_EPS) / 4)
    assert (row.n_images, row.n_eps, row.steps) == (5, 4, 10)


def test_pgd_fixed_and_limit_rows_report_robust_accuracy_and_rates():
    model, x, y = threshold_problem()
    rows = run_suite(tiny_config(measures=("pgd_fixed", "limit_forward", "limit_forward_backward"), eps=4 / 255),
                     model, x, y, TASK, 2, log=quiet)
    assert {(r.measure, r.library) for r in rows} == {
        ("pgd_fixed", "ours"), ("limit_forward", "torch_eager"), ("limit_forward_backward", "torch_eager"),
        ("limit_forward", "torch_channels_last"), ("limit_forward_backward", "torch_channels_last")}
    for r in rows:  # at 4/255 the images with offsets 6 and 12 stay robust; the clean error never is
        assert r.robust_acc == pytest.approx(2 / 5), r
        assert r.images_per_s == pytest.approx(r.n_images / r.seconds)
    pgd = next(r for r in rows if r.measure == "pgd_fixed")
    assert pgd.passes_per_s == pytest.approx(5 * 10 / pgd.seconds)  # 10 input-gradient passes per image


def test_missing_peer_gives_a_one_line_note_and_empty_rows(monkeypatch):
    fake = Library("not-a-real-attack-lib", "not_a_real_attack_lib_xyz", pgd=lambda *a: None, square=lambda *a: None)
    monkeypatch.setitem(LIBRARIES, "not-a-real-attack-lib", fake)
    model, x, y = threshold_problem()
    lines: list[str] = []
    rows = run_suite(tiny_config(measures=("pgd_fixed", "square"), libraries=("ours", "not-a-real-attack-lib")),
                     model, x, y, TASK, 2, log=lines.append)
    missing = [r for r in rows if r.library == "not-a-real-attack-lib"]
    assert [r.measure for r in missing] == ["pgd_fixed", "square"]
    for r in missing:
        assert r.seconds is None and r.robust_acc is None and "cannot import" in r.note and "pip install" in r.note
        assert set(r.csv_dict()) == set(COLUMNS) and r.csv_dict()["seconds"] == ""
    notes = [line for line in lines if line.startswith("note:") and "not-a-real-attack-lib" in line]
    assert len(notes) == 1 and "\n" not in notes[0]
    assert all(r.seconds is not None for r in rows if r.library == "ours")


def test_script_writes_exactly_the_columns_and_a_row_per_measure_and_library(tmp_path):
    root = real_root_or_skip("pneumoniamnist")
    from scripts.bench_speed import main

    threads = torch.get_num_threads()
    try:  # one thread: this test's batches are tiny, and a CPU shared with other jobs makes thread teams crawl
        main(["--threads", "1", "--root", str(root), "--model", "resnet18_native", "--zoo", str(tmp_path / "zoo"),
              "--if-missing", "random", "--n-images", "4", "--steps", "1", "--repeats", "1", "--libraries", "ours",
              "--max-queries", "3", "--forms", "torch_eager", "--scale-sizes", "2", "4", "--scale-steps", "1", "2",
              "--scale-libraries", "ours",
              "--ours-form", "torch_eager", "--no-warmup", "--out-dir", str(tmp_path / "perf")])
    finally:
        torch.set_num_threads(threads)
    path = tmp_path / "perf" / "cpu_resnet18_native_pneumoniamnist.csv"
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        records = list(reader)
    assert tuple(reader.fieldnames) == COLUMNS
    assert sorted((r["measure"], r["library"], r["n_images"], r["steps"]) for r in records) == sorted([
        ("limit_forward", "torch_eager", "4", ""), ("limit_forward_backward", "torch_eager", "4", ""),
        ("pgd_fixed", "ours", "4", "1"), ("pgd_4eps", "ours", "4", "1"), ("square", "ours", "4", ""),
        ("scale_images", "ours", "2", "1"), ("scale_images", "ours", "4", "1"),
        ("scale_steps", "ours", "4", "1"), ("scale_steps", "ours", "4", "2"),
    ])
    for r in records:
        assert 0 <= float(r["robust_acc"]) <= 1 and float(r["seconds"]) > 0
    readme = (tmp_path / "perf" / "README.md").read_text()
    assert "RANDOM weights" in readme and "python scripts/bench_speed.py" in readme and "| pgd_4eps | ours |" in readme


def test_ratio_bound_and_slopes():
    rows = [Row("pgd_fixed", "ours", 100, 1, 10, seconds=10.0, images_per_s=10.0),
            Row("pgd_fixed", "torchattacks", 100, 1, 10, seconds=20.0, images_per_s=5.0),
            Row("limit_forward_backward", "torch_eager", 100, seconds=1.0, images_per_s=100.0, passes_per_s=100.0),
            Row("limit_forward_backward", "torch_compile", 100, seconds=0.5, images_per_s=200.0, passes_per_s=200.0),
            Row("scale_images", "ours", 10, 1, 10, seconds=2.0, images_per_s=5.0),
            Row("scale_images", "ours", 30, 1, 10, seconds=4.0, images_per_s=7.5),
            Row("scale_images", "torchattacks", 30, 1, 10, seconds=8.0, images_per_s=3.75)]
    assert ratio_to_reference(rows[1], rows) == pytest.approx(2.0)   # twice our time per image
    assert ratio_to_reference(rows[3], rows) == pytest.approx(0.5)   # limits compare with eager torch
    assert ratio_to_reference(rows[6], rows) == pytest.approx(2.0)   # scale rows: same number of images
    assert slopes(rows) == [("scale_images", "ours", pytest.approx(0.1), pytest.approx(1.0))]
    text = render_markdown(rows, {"title": "t"})
    assert "| pgd_fixed | torchattacks | 100 | 1 | 10 |  | 20 | 5 |  | 2.00x |" in text
    assert "cannot exceed 200/k" in text and "= 50% of the bound 20" in text


def test_results_merge_by_measure_and_library_and_refuse_a_foreign_csv(tmp_path):
    first = [Row("pgd_fixed", "ours", 4, 1, 1, seconds=1.0), Row("square", "ours", 4, 1, seconds=2.0, median_queries=3.0)]
    write_results(tmp_path, "cpu_m_d", first, {"title": "cpu_m_d", "command": "a"}, ["ours"])
    rerun = [Row("square", "ours", 4, 1, seconds=5.0, note="again", mean_queries=4.5)]
    rows = write_results(tmp_path, "cpu_m_d", rerun, {"title": "cpu_m_d", "command": "b"}, ["ours"])
    assert [(r.measure, r.seconds) for r in rows] == [("pgd_fixed", 1.0), ("square", 5.0)]
    back = read_rows(tmp_path / "cpu_m_d.csv")
    assert back[1].note == "again" and back[1].mean_queries == 4.5 and back[1].median_queries is None
    assert json.loads((tmp_path / "cpu_m_d.json").read_text())["meta"]["commands"] == ["a", "b"]
    readme = (tmp_path / "README.md").read_text()
    assert readme.count("<!-- bench_speed:cpu_m_d -->") == 1 and "`b`" in readme
    (tmp_path / "cpu_m_d.csv").write_text("measure,library,seconds\npgd_fixed,ours,1\n")
    with pytest.raises(ValueError, match="expected"):
        write_results(tmp_path, "cpu_m_d", rerun, {"title": "cpu_m_d"}, ["ours"])


def test_art_queries_are_recovered_from_its_predict_calls():
    # 5 images, 4 correct; stripes fool 1, iteration 1's candidate fools 2, the last candidate 1 more.
    sizes = [5, 4, 4, 5, 3, 3, 5, 3, 3, 5, 1, 1]
    assert art_success_queries(sizes, fooled_count=4) == [1, 3, 3, 4]
    assert art_success_queries([5, 4, 3], 1) is None  # not ART's pattern: no guess


def test_peak_memory_sees_a_torch_allocation():
    result = measure(lambda: float(torch.ones(64 * 2**20 // 4).sum()), repeats=1, device="cpu")
    assert result.peak_mem_mb is not None and result.peak_mem_mb > 32
    assert result.result == 64 * 2**20 // 4


@pytest.mark.parametrize("name", sorted(PEERS))
def test_each_installed_peer_runs_the_same_pgd(name):
    """Same budget, same answer on the threshold model (where every correct PGD reaches the ball's corner).

    A peer that is not installed (CI installs only ``.[dev]``) must instead refuse with the install hint.
    """
    try:
        module = PEERS[name].load()
    except LibraryMissing as missing:
        assert "cannot import" in str(missing) and 'pip install -e ".[compare]"' in str(missing)
        return
    model, x, y = threshold_problem()
    for p in model.parameters():
        p.requires_grad_(False)
    problem = Problem(model, x, y, TASK, 2, batch_size=len(x))
    torch.manual_seed(0)
    x_adv = PEERS[name].pgd(module, problem, PgdSettings(4 / 255, 10, 0.25, True, 0))
    assert (x_adv - x).abs().max() <= 4 / 255 + 1e-6
    with torch.no_grad():
        robust = TASK.correct(model(x_adv), y) & TASK.correct(model(x), y)
    assert robust.tolist() == [False, False, True, True, False]


def test_targets_are_computed_from_the_rows_and_name_what_fails():
    limit = Row("limit_forward_backward", "torch_compile", 100, seconds=0.5, passes_per_s=200.0)
    rows = [limit,
            Row("pgd_fixed", "ours", 100, 1, 10, seconds=5.5, passes_per_s=190.0, robust_acc=0.30, peak_mem_mb=100.0),
            Row("pgd_fixed", "torchattacks", 100, 1, 10, seconds=9.0, passes_per_s=111.0, robust_acc=0.302, peak_mem_mb=95.0),
            Row("pgd_4eps", "ours", 100, 4, 10, seconds=10.0, robust_acc=0.2, extra={"robust_by_eps": {"0.1": 0.3, "0.2": 0.1}}),
            Row("pgd_4eps", "foolbox", 100, 4, 10, seconds=25.0, robust_acc=0.2, extra={"robust_by_eps": {"0.1": 0.3, "0.2": 0.09}})]
    found = {v.name: v for v in verdicts(rows, "cpu")}
    assert found["efficiency"].met and "0.95 of the limit" in found["efficiency"].detail
    assert found["pgd_fixed"].met and "1.64x the fastest peer (torchattacks" in found["pgd_fixed"].detail
    assert not found["pgd_4eps"].met and "2.50x" in found["pgd_4eps"].detail and "foolbox at 0.2" in found["pgd_4eps"].detail
    assert found["memory"].met and "pgd_fixed 1.05x the lowest peer (torchattacks)" in found["memory"].detail
    assert "square" not in found  # no square rows: nothing to check
    on_gpu = render_markdown(rows, {"title": "cuda_m_d"})
    assert "- pgd_4eps: not a target on cuda" in on_gpu and "- efficiency: met" in on_gpu


def test_battery_row_is_the_standard_battery_end_to_end_with_the_exact_robust_accuracy(tmp_path, monkeypatch):
    """Issue 16's measure: ours runs conf/battery/standard.yaml as `medbench attack` does (form prepared inside
    the timing, records written); on the threshold model every epsilon's robust accuracy is known exactly."""
    monkeypatch.setenv("MEDBENCH_COMPILE_CACHE", str(tmp_path / "compile_cache"))
    model, x, y = threshold_problem()
    tiny = tuple(f"battery.attacks.{a}.params.steps=20" for a in ("apgd_ce", "apgd_margin", "fmn_linf")) + (
        "battery.attacks.square_linf.params.max_queries=200",)
    (row,) = run_suite(tiny_config(measures=("battery",), battery_overrides=tiny), model, x, y, TASK, 2, log=quiet)
    assert (row.measure, row.library, row.n_images, row.n_eps) == ("battery", "ours", len(OFFSETS), 4)
    assert row.note.startswith("budgets overridden: battery.attacks.apgd_ce.params.steps=20")
    assert row.extra["attacks"] == ["apgd_ce", "apgd_margin", "fmn_linf", "square_linf"]
    assert row.extra["model_form"] == "torch_eager" and row.seconds > 0  # the tests' form (conftest)
    assert list(row.extra["robust_by_eps"].values()) == pytest.approx(ROBUST_BY_EPS)
    assert row.robust_acc == pytest.approx(sum(ROBUST_BY_EPS) / 4)


def test_a_profiled_battery_gives_the_same_robust_accuracy_and_times_every_attack(tmp_path):
    """Issue 16 item 5: scripts/profile_battery.py's run is the battery itself, timed per attack."""
    from bench.benchmark.ours import standard_battery

    model, x, y = threshold_problem()
    tiny = ("battery.attacks.apgd_ce.params.steps=20", "battery.attacks.square_linf.params.max_queries=50")
    problem = Problem(model, x, y, TASK, 2, len(x))
    epsilons = [e / 255 for e in (1, 2, 4, 8)]
    robust, report = standard_battery(model, problem, epsilons, 0, "torch_eager", tmp_path, tiny, profile=True)
    assert robust.float().mean(1).tolist() == pytest.approx(ROBUST_BY_EPS)
    stages = report["profile"]
    assert list(stages) == ["clean", "apgd_ce", "apgd_margin", "fmn_linf", "square_linf", "records"]
    assert stages["clean"].forward_samples == len(x)
    assert stages["apgd_ce"].backward_samples > 0 and stages["square_linf"].backward_samples == 0  # Square: no gradients
    assert all(s.host_s >= 0 for s in stages.values())


def test_profile_script_writes_a_row_per_attack_with_the_command_and_the_form(tmp_path):
    root = real_root_or_skip("pneumoniamnist")
    from scripts.profile_battery import main

    out = main(["--root", str(root), "--zoo", str(tmp_path / "zoo"), "--if-missing", "random", "--n-images", "6",
                "--form", "torch_eager", "--out-dir", str(tmp_path / "perf"), "--override",
                *(f"battery.attacks.{a}.params.steps=2" for a in ("apgd_ce", "apgd_margin", "fmn_linf")),
                "battery.attacks.square_linf.params.max_queries=5"])
    text = out.read_text()
    assert out.name == "profile_cpu_resnet18_native_pneumoniamnist.md"
    assert "python scripts/profile_battery.py --root" in text and "model form: torch_eager" in text
    for stage in ("clean", "apgd_ce", "apgd_margin", "fmn_linf", "square_linf", "records", "**total**"):
        assert f"| {stage} |" in text


def test_autoattack_battery_runs_where_torchattacks_is_installed_and_says_what_differs():
    """AutoAttack once per epsilon; on a binary task APGD-T cannot run (DLR needs 4 classes) and the row says so."""
    try:
        PEERS["torchattacks"].load()
    except LibraryMissing as missing:
        assert 'pip install -e ".[compare]"' in str(missing)
        return
    model, x, y = threshold_problem()
    (row,) = run_suite(tiny_config(measures=("battery",), libraries=("torchattacks",)), model, x, y, TASK, 2, log=quiet)
    assert "APGD-T left out" in row.extra["mismatch"] and not row.note
    assert list(row.extra["robust_by_eps"].values()) == pytest.approx(ROBUST_BY_EPS)


def test_battery_target_needs_twice_autoattacks_speed_and_never_a_higher_robust_accuracy():
    def rows(ours_s: float, ours_by: dict) -> list[Row]:
        aa = Row("battery", "torchattacks", 624, n_eps=2, seconds=100.0)
        aa.extra["robust_by_eps"] = {"0.00392157": 0.70, "0.00784314": 0.50}
        ours = Row("battery", "ours", 624, n_eps=2, seconds=ours_s)
        ours.extra.update(robust_by_eps=ours_by, form_prepare_s=4.0)
        return [ours, aa]

    same = {"0.00392157": 0.70, "0.00784314": 0.49}
    (met,) = [v for v in verdicts(rows(40.0, same), "cpu") if v.name == "battery"]
    assert met.met and "2.50x AutoAttack" in met.detail
    (slow,) = [v for v in verdicts(rows(60.0, same), "cpu") if v.name == "battery"]
    assert not slow.met
    (weaker,) = [v for v in verdicts(rows(10.0, {"0.00392157": 0.72, "0.00784314": 0.49}), "cpu") if v.name == "battery"]
    assert not weaker.met and "higher at 0.00392157 (0.720 > 0.700)" in weaker.detail


def test_the_zoo_model_timed_is_the_newest_undefended_one_even_when_a_defense_is_newer(tmp_path):
    import os

    from bench.benchmark.inputs import preferred_entry

    def entry(name: str, defense: str, mtime: int):
        weights = tmp_path / f"resnet18_native_seed0_{name}.safetensors"
        weights.write_bytes(b"")
        weights.with_suffix(".json").write_text(json.dumps({"train": {"defense": defense}}))
        os.utime(weights, (mtime, mtime))
        return weights

    old_plain, plain, trades = entry("a", "none", 100), entry("b", "none", 200), entry("c", "trades", 300)
    assert preferred_entry([old_plain, plain, trades]) == plain
    assert preferred_entry([trades]) == trades  # nothing undefended: the newest, as before
