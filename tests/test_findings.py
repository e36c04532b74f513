"""The defense findings in results/README.md are computed from the rows, intervals and all."""

from __future__ import annotations

from pathlib import Path

from bench.report.findings import findings_markdown
from bench.report.tracks import Track
from tests.conftest import board_row, evaluation_rows

EPS2 = 2 / 255


def track(rows) -> Track:
    return Track("breastmnist_28_linf", "breastmnist", "28", "linf", Path("x.csv"), tuple(rows))


def undefended(**kw):
    return evaluation_rows((0.58, 0.28, 0.03, 0.0), model="resnet18_native_seed0", config_hash="base", **kw)


def transform_rows():
    """A BPDA-evaluated transform: plain gradient attacks leave 0.80 at 2/255, BPDA takes it to 0.20."""
    common = dict(model="resnet18_native_seed0", defense="bit_depth(bits=4)", config_hash="bits",
                  adaptive="bpda_apgd_ce;transfer_backbone", eps=EPS2, eps_label="2/255")
    order = [("apgd_ce", "gradient", 0.82), ("fmn_linf", "minimum_norm", 0.80), ("bpda_apgd_ce", "gradient", 0.20),
             ("square_linf", "score", 0.19), ("transfer_backbone", "transfer", 0.19)]
    rows = [board_row(attack=a, kind=k, robust_acc=v, robust_acc_lo=v - 0.06, robust_acc_hi=v + 0.06, **common)
            for a, k, v in order]
    rows += [board_row(robust_acc=0.19, robust_acc_lo=0.13, robust_acc_hi=0.25,
                       battery_hash=evaluation_rows()[0]["battery_hash"], **common)]
    return rows


def test_a_trained_defense_is_compared_with_the_undefended_model_of_its_seed_with_intervals():
    rows = undefended() + evaluation_rows((0.70, 0.55, 0.30, 0.05), model="resnet18_native_seed0",
                                          defense="pgd_at", config_hash="pgd", adaptive="transfer_backbone")
    text = "\n".join(findings_markdown(track(rows)))
    line = next(l for l in text.splitlines() if l.startswith("| pgd_at |"))
    assert "0.550 [0.48, 0.62]" in line and "0.280 [0.21, 0.35]" in line
    assert "**yes**, intervals apart" in line


def test_overlapping_intervals_are_not_called_a_win():
    rows = undefended() + evaluation_rows((0.6, 0.32, 0.05, 0.0), model="resnet18_native_seed0",
                                          defense="trades", config_hash="tr")
    line = next(l for l in findings_markdown(track(rows)) if l.startswith("| trades |"))
    assert "intervals overlap" in line and "yes" not in line.split("|")[6]


def test_a_transform_shows_plain_gradient_robustness_then_what_bpda_leaves():
    text = "\n".join(findings_markdown(track(undefended() + transform_rows())))
    assert "+ bpda_apgd_ce | + square_linf | + transfer_backbone" in text
    line = next(l for l in text.splitlines() if l.startswith("| 2/255 |"))
    # plain: the last plain gradient row (FMN, cumulative); then BPDA's drop; the final row is the worst case
    assert line.startswith("| 2/255 | 0.800 [0.74, 0.86] | 0.200 | 0.190 | 0.190 | 0.190 [0.13, 0.25] |")


def test_a_transform_is_compared_with_the_undefended_evaluation_of_the_weights_it_wraps():
    """Two undefended evaluations of seed 0 (a retrained zoo gives other weights): the transform's comparison
    is the one of the backbone it wraps, not merely the last or the ranked one."""
    wrapped = undefended(weights_sha256="backbone")
    other = evaluation_rows((0.60, 0.40, 0.05, 0.0), model="resnet18_native_seed0", config_hash="base",
                            weights_sha256="retrained")
    rows = wrapped + other + [dict(r, weights_sha256="backbone") for r in transform_rows()]
    line = next(l for l in findings_markdown(track(rows)) if l.startswith("| bit_depth(bits=4) |"))
    assert "0.280 [0.21, 0.35]" in line and "0.400" not in line
    assert line.rstrip().endswith("| `backbone` / `backbone` |")


def test_a_comparison_over_other_weights_names_both_and_an_unranked_row_names_the_rules_it_fails():
    """No undefended evaluation of the weights a transform wraps: it is compared with another one of its recipe
    and seed, and the row says whose weights each number comes from."""
    rows = undefended(weights_sha256="retrain1") + [dict(r, weights_sha256="backbone") for r in transform_rows()]
    line = next(l for l in findings_markdown(track(rows)) if l.startswith("| bit_depth(bits=4) |"))
    assert line.rstrip().endswith("| `backbone` / `retrain1` |")
    assert "| no (fails rule: " in line  # these rows lack the battery's other epsilons


def test_a_track_without_defenses_has_no_findings():
    assert findings_markdown(track(undefended())) == []


def test_a_win_measured_by_an_unreliable_evaluation_is_not_called_one():
    """A transform whose plain and BPDA attacks left samples that Square then broke is flagged unreliable: even
    with its interval above the undefended model's, the findings do not call it a win."""
    flagged = [dict(r, flags="black_box_beats_white_box_per_sample", unreliable="True", robust_acc=0.6,
                    robust_acc_lo=0.55, robust_acc_hi=0.65) if r["attack"] == "battery:standard" else r
               for r in transform_rows()]
    line = next(l for l in findings_markdown(track(undefended() + flagged)) if l.startswith("| bit_depth(bits=4) |"))
    assert "**yes**" not in line
    assert "intervals apart, but the evaluation is unreliable (black_box_beats_white_box_per_sample)" in line
