"""Check and evaluate a defense submission (a folder: submission.yaml + safetensors weights; results/SUBMITTING.md).

    python scripts/submit.py submission=examples/submission
    python scripts/submit.py submission=examples/submission device=cuda
    python scripts/submit.py submission=examples/submission --check        # the checks only, nothing run
    python scripts/submit.py submission=examples/submission dataset.n_examples=16 \\
        battery.attacks.apgd_ce.params.steps=10 battery.attacks.square_linf.params.max_queries=100   # smoke budget

Every check runs before any evaluation and before anything is written: a rejected
submission prints what is wrong and how to fix it, and leaves no file behind. An
accepted one is attacked with its track's standard battery plus the adaptive
attacks its declaration selects; rows go to the local leaderboard
(outputs/leaderboard/), summary.json to outputs/submissions/<name>-<digest>-<config>/.

Other key=value arguments are config overrides for the budget and the machine
(device, eval.batch_size, dataset.n_examples, battery.attacks.<attack>.params.*,
train.* for a trained defense's transfer source, paths.*). A smoke budget (a
subset, fewer steps or queries) is never rankable. The track, model, defense,
seed and battery come from the YAML and cannot be overridden.

This is not a Hydra app on purpose: Hydra would create its run folder before the
submission is checked.
"""

from __future__ import annotations

import sys

import bench.config  # noqa: F401  (registers the workspace_root resolver)
from bench.errors import BenchError

USAGE = "usage: python scripts/submit.py submission=<folder> [--check] [key=value ...]  (--help for more)"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0
    check_only = "--check" in args
    args = [a for a in args if a != "--check"]
    folders = [a.partition("=")[2] for a in args if a.startswith("submission=")]
    if len(folders) != 1 or not folders[0]:
        raise SystemExit(f"error: give exactly one submission=<folder>.\n{USAGE}")
    overrides = [a for a in args if not a.startswith("submission=")]
    unknown = [a for a in overrides if a.startswith("-")]
    if unknown:
        raise SystemExit(f"error: unknown option(s) {unknown}.\n{USAGE}")

    from bench.submission import evaluate_submission

    try:
        evaluate_submission(folders[0], overrides, check_only=check_only)
    except BenchError as exc:
        raise SystemExit(f"error: {exc}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
