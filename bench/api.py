"""Evaluate any ``nn.Module`` from Python, without Hydra or the command line (RobustBench's ``benchmark``).

    >>> from bench.api import evaluate_model
    >>> rows = evaluate_model(my_model, dataset="breastmnist", epsilons=["1/255", "2/255"], battery="standard")
    >>> [(r["attack"], r["eps_label"], r["robust_acc"]) for r in rows if r["kind"] == "battery"]

The model takes inputs in [0, 1] (N, C, H, W) and returns logits. The run is
the same as ``scripts/attack.py``'s (same battery, records, checks and rows);
rows go to ``output_dir``'s local leaderboard, never to results/.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch.nn as nn

from bench.errors import ConfigError


def evaluate_model(
    model: nn.Module,
    dataset: str = "breastmnist",
    size: int = 28,
    norm: str = "linf",
    epsilons: Sequence[str | float] | None = None,
    battery: str = "standard",
    defense: str = "none",
    n_examples: int | None = None,
    device: str = "cpu",
    name: str = "custom",
    seed: int = 0,
    output_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> list[dict]:
    """Attack ``model`` with ``battery`` on the test split of ``dataset``; returns the summary rows.

    Args:
        model: any classifier, inputs in [0, 1], logits out (normalisation inside the model).
        epsilons: replace every battery attack's epsilons (e.g. ``["1/255", "2/255"]``); None keeps the battery's.
        defense: a registered defense (conf/defense/) wrapped around ``model``.
        n_examples: evaluate a deterministic subset (not rankable) instead of the whole test split.
        overrides: further Hydra overrides, as on the command line.
    """
    from bench.config import compose
    from bench.data import dataset_info
    from bench.experiment import run_experiment
    from bench.sources import Loaded, card_for

    if norm != "linf" and battery == "standard":
        raise ConfigError(f"the standard battery is L-inf; for norm {norm!r} pass battery=None with "
                          "overrides=['attack=<an attack of that norm>'].")
    out = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="medbench-"))
    args = [f"dataset={dataset}", f"dataset.size={size}", f"defense={defense}", "logger=none", f"seed={seed}",
            f"device={device}", f"paths.output_root={out}", f"paths.output_dir={out / 'run'}", "checkpoint=null"]
    if battery:
        args.append(f"battery={battery}")
    if n_examples is not None:
        args.append(f"dataset.n_examples={n_examples}")
    cfg = compose([*args, *overrides])
    if epsilons is not None:
        labels = [str(e) for e in epsilons]
        for attack in (cfg.battery.attacks.values() if cfg.get("battery") and cfg.battery.get("attacks") else [cfg.attack]):
            attack.epsilons = labels
    info = dataset_info(dataset, size)
    supplied = Loaded(model.eval(), card_for(model, info, name, seed=seed))
    return run_experiment(cfg, out / "run", supplied)
