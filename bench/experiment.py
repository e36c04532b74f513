"""Turn a composed Hydra config into bench objects, and run one experiment end to end.

The scripts stay thin: everything an experiment does is here, callable from
tests and notebooks without Hydra.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from bench.data import DatasetInfo, dataset_info
from bench.models import ModelSpec
from bench.train import TrainConfig


def dataset_info_from_cfg(cfg: DictConfig) -> DatasetInfo:
    return dataset_info(str(cfg.dataset.flag), int(cfg.dataset.size))


def model_spec_from_cfg(cfg: DictConfig) -> ModelSpec:
    m = cfg.model
    return ModelSpec(
        name=str(m.name),
        arch=str(m.arch),
        recipe=str(m.recipe),
        pretrained=bool(m.get("pretrained", False)),
        input_size=m.get("input_size"),
        mean=float(m.get("mean", 0.5)),
        std=float(m.get("std", 0.5)),
    )


def train_config_from_cfg(cfg: DictConfig) -> TrainConfig:
    t = cfg.train
    return TrainConfig(
        epochs=int(t.epochs),
        batch_size=int(t.batch_size),
        lr=float(t.lr),
        weight_decay=float(t.weight_decay),
        milestones=tuple(float(m) for m in t.milestones),
        gamma=float(t.gamma),
        seed=int(t.seed),
        n_train=t.get("n_train"),
        augment=str(t.get("augment", "none")),
        device=str(cfg.device),
    )


def _git_commit() -> str:
    import subprocess

    from bench.config import REPO_ROOT

    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _versions() -> str:
    import foolbox
    import timm

    return f"torch={torch.__version__};timm={timm.__version__};foolbox={foolbox.__version__}"


def attack_specs(cfg: DictConfig) -> list[tuple[str, dict]]:
    """(id, attack config) pairs: the battery's attacks if one is chosen, else the single attack."""
    from bench.config import to_dict

    battery = cfg.get("battery")
    if battery and battery.get("attacks"):
        return [(str(key), to_dict(value)) for key, value in battery.attacks.items()]
    single = to_dict(cfg.attack)
    return [(str(single.get("id") or single["name"]), single)]


def build_plan(cfg: DictConfig) -> list:
    """Instantiate every attack of the experiment (so bad names and epsilons fail before any work)."""
    from bench.attacks import build_attack
    from bench.attacks.threat import validate_eps
    from bench.config import parse_eps
    from bench.evaluate import PlannedAttack

    plan = []
    for attack_id, a in attack_specs(cfg):
        labels = [str(e) for e in a.get("epsilons", [])]
        epsilons = [parse_eps(e) for e in labels]
        attack = build_attack(a["name"], a.get("norm", "linf"), int(cfg.seed), a.get("params") or {})
        for eps in epsilons:
            validate_eps(eps, attack.norm)
        plan.append(PlannedAttack(attack_id, attack, epsilons, dict(zip(epsilons, labels))))
    return plan


def format_table(rows: list[dict]) -> str:
    """A fixed-width text table of summary rows for the terminal."""
    cols = ("attack", "norm", "eps", "n", "clean_acc", "robust_acc", "asr", "linf_median", "l2_median", "seconds")
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)
    body = [[cell(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(b) for b in body])


def _json_safe(rows: list[dict]) -> list[dict]:
    """NaN (no successful example, say) becomes null: JSON has no NaN."""
    import math

    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]


def run_experiment(cfg: DictConfig, output_dir: str | Path) -> list[dict]:
    """Train-or-load the model, run the attack(s), write summary.json, the leaderboard rows and the W&B run.

    Everything that can be refused (names, sizes, epsilons, checkpoints) is
    checked before any attack runs, and nothing is written until every attack
    has finished, so a bad config or a crash leaves no partial leaderboard row.
    """
    import datetime as dt

    from bench.checks import attach_flags, run_model_checks
    from bench.config import config_hash, to_dict
    from bench.data import load_split
    from bench.evaluate import clean_correct_mask, run_attacks, summary_row, worst_case
    from bench.leaderboard import track_path, upsert_rows
    from bench.logging import make_sink
    from bench.models import load_checkpoint
    from bench.zoo import get_or_train

    torch.manual_seed(int(cfg.seed))
    info = dataset_info_from_cfg(cfg)
    spec = model_spec_from_cfg(cfg)
    plan = build_plan(cfg)
    split = load_split(
        info.flag, str(cfg.dataset.split), info.size, cfg.data.root, bool(cfg.data.download),
        cfg.dataset.get("n_examples"), int(cfg.dataset.get("subset_seed", cfg.seed)),
    )
    checkpoint = cfg.get("checkpoint")
    if checkpoint:
        weights = Path(str(checkpoint))
        model, card = load_checkpoint(weights, info.n_channels, info.num_classes)
    else:
        model, card, weights = get_or_train(
            spec, info.flag, info.size, cfg.data.root, train_config_from_cfg(cfg), cfg.paths.zoo_dir,
            info.n_channels, info.num_classes,
        )
    device = str(cfg.device)
    model = model.to(device).eval()
    from bench.attacks.base import AttackContext

    context = AttackContext(info, cfg.data.root, str(cfg.paths.zoo_dir), train_config_from_cfg(cfg), device, card)
    for planned in plan:
        planned.attack.prepare(context)
    batch_size = int(cfg.eval.batch_size)
    clean = clean_correct_mask(model, split, batch_size, device)
    print(f"{info.track} {split.split} n={len(split)}  model {card.name} (seed {card.seed})  clean_acc {clean.float().mean():.4f}", flush=True)

    battery = cfg.get("battery")
    mode = str(battery.get("mode", "independent")) if battery else "independent"
    started = time.perf_counter()
    results = run_attacks(model, split, plan, batch_size, device, clean, mode)
    print(f"  attacks done in {time.perf_counter() - started:.1f}s", flush=True)
    labels = {e: lbl for p in plan for e, lbl in p.eps_labels.items()}
    if battery and len(results) > 1:
        for norm in sorted({r.norm for r in results}):
            group = [r for r in results if r.norm == norm]
            results.append(worst_case(group, f"battery:{battery.name}"))

    resolved = to_dict(cfg)
    common = {
        "dataset": info.flag, "size": info.size, "model": card.name, "arch": card.arch, "recipe": card.recipe,
        "seed": int(cfg.seed), "tag": str(cfg.get("tag", "")), "config_hash": config_hash(cfg),
        "weights_sha256": card.sha256, "git_commit": _git_commit(), "versions": _versions(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    rows = []
    for result in results:
        for outcome in result.by_eps.values():
            rows.append({**common, **summary_row(result, outcome), "eps_label": labels.get(outcome.eps, f"{outcome.eps:.6g}")})

    kinds = {p.attack_id: p.attack.kind for p in plan}
    for r in rows:
        r["kind"] = kinds.get(r["attack"], "battery")
    probe = slice(0, min(32, len(split)))
    model_flags = run_model_checks(model, split.images[probe].to(device), split.labels[probe].to(device), info.task)
    attach_flags(rows, model_flags)
    if model_flags:
        print(f"  checks flagged the model: {', '.join(model_flags)}", flush=True)

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(_json_safe(rows), indent=2) + "\n")
    tmp.replace(output_dir / "summary.json")
    for norm in sorted({r["norm"] for r in rows}):
        upsert_rows(track_path(cfg.paths.leaderboard_dir, info.flag, info.size, norm), [r for r in rows if r["norm"] == norm])
    sink = make_sink(to_dict(cfg.logger), resolved, name=f"{info.track}-{card.name}-{common['config_hash']}")
    try:
        sink.log_rows(rows)
    finally:
        sink.finish()
    print(format_table(rows), flush=True)
    print(f"summary: {output_dir / 'summary.json'}", flush=True)
    return rows
