"""Turn a composed Hydra config into bench objects, and run one experiment end to end.

The scripts stay thin: everything an experiment does is here, callable from
tests and notebooks without Hydra.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from bench.data import DatasetInfo, dataset_info, is_3d
from bench.models import ModelSpec, pretrained_source
from bench.train import TrainConfig


def dataset_info_from_cfg(cfg: DictConfig) -> DatasetInfo:
    return dataset_info(str(cfg.dataset.flag), int(cfg.dataset.size))


def pretrained_value(value: object) -> bool | str:
    """``model.pretrained``: false, true (timm's hub) or the path of a local .safetensors file."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value)
    return {"true": True, "false": False}.get(text.lower(), text)


def model_spec_from_cfg(cfg: DictConfig) -> ModelSpec:
    """The model group as a ModelSpec. On a 3D dataset the name carries the volume conversion
    (``resnet18_28_acs``), so the zoo, records and leaderboard keep ACS, 2.5D and 3D models apart."""
    m = cfg.model
    volume = str(m.get("volume", "acs"))
    dataset = cfg.get("dataset")
    volumes = bool(dataset) and dataset.get("flag") is not None and is_3d(str(dataset.flag))
    return ModelSpec(
        name=f"{m.name}_{volume}" if volumes else str(m.name),
        arch=str(m.arch),
        recipe=str(m.recipe),
        pretrained=pretrained_value(m.get("pretrained", False)),
        input_size=m.get("input_size"),
        mean=float(m.get("mean", 0.5)),
        std=float(m.get("std", 0.5)),
        volume=volume,
    )


def defense_spec_from_cfg(cfg: DictConfig):
    """The ``defense`` group's name and inference parameters (``none`` when the config has no defense)."""
    from bench.config import to_dict
    from bench.defenses import DefenseSpec

    d = cfg.get("defense")
    if not d:
        return DefenseSpec()
    return DefenseSpec(str(d.get("name", "none")), dict(to_dict(d.get("params") or {})))


def defense_training_from_cfg(cfg: DictConfig) -> tuple[str, dict]:
    """(method, settings) of the defense's ``train`` section: how its weights are made (``none``, {} if not trained)."""
    from bench.config import to_dict

    d = cfg.get("defense")
    section = d.get("train") if d else None
    if not section:
        return "none", {}
    params = dict(to_dict(section))
    method = str(params.pop("method"))
    per_dataset = params.pop("eps_per_dataset", None) or {}
    if "eps" in params:
        params["eps"] = str(per_dataset.get(str(cfg.dataset.flag), params["eps"]))
    return method, params


def train_config_from_cfg(cfg: DictConfig) -> TrainConfig:
    t = cfg.train
    method, params = defense_training_from_cfg(cfg)
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
        data_order_seed=None if t.get("data_order_seed") is None else int(t.data_order_seed),
        bn_stats=str(t.get("bn_stats", "ema")),
        precision=str(t.get("precision", "fp32")),
        device=str(cfg.device),
        defense=method,
        defense_params=params,
        init=pretrained_source(pretrained_value(cfg.model.get("pretrained", False))),
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
    """Versions of the packages that decide a result, for the leaderboard's provenance columns."""
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for package in ("medbench", "torch", "timm", "foolbox", "medmnist", "numpy"):
        try:
            parts.append(f"{package}={version(package)}")
        except PackageNotFoundError:
            parts.append(f"{package}=?")
    return ";".join(parts)


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


@dataclass
class Prepared:
    """Everything an experiment needs before its first attack, checked up front."""

    info: DatasetInfo
    split: object  # bench.data.Split
    model: torch.nn.Module  # the classifier, wrapped by its defense (if any)
    card: object  # bench.models.ModelCard
    plan: list
    device: str
    mode: str
    battery_name: str | None
    defense: str = "none"  # how rows name the defense, with its parameters: jpeg(quality=75)
    adaptive: tuple[str, ...] = ()  # adaptive attacks the declaration added to the plan
    backbone: torch.nn.Module | None = None  # the undefended classifier of the same recipe and seed
    reported: dict | None = None  # eps label -> robust accuracy the authors report (submissions)

    @property
    def model_id(self) -> str:
        """How the leaderboard names the model: its card name and training seed (seeds are different models)."""
        return f"{self.card.name}_seed{self.card.seed}"


def load_classifier(cfg: DictConfig, info: DatasetInfo):
    """The classifier the config describes (``checkpoint=`` or the zoo), through bench.sources."""
    from bench.sources import ModelDescription, load_model

    checkpoint = cfg.get("checkpoint")
    if checkpoint:
        return load_model(info, ModelDescription("checkpoint", {"path": Path(str(checkpoint))}))
    return load_model(info, ModelDescription("zoo", {
        "spec": model_spec_from_cfg(cfg), "train": train_config_from_cfg(cfg), "zoo_dir": cfg.paths.zoo_dir,
        "data_root": cfg.data.root}))


def undefended_backbone(cfg: DictConfig, info: DatasetInfo, model: torch.nn.Module, card) -> torch.nn.Module | None:
    """The transfer source of a defense: the wrapped classifier of an input transform, or, for a trained
    defense, the zoo's standard model of the same recipe, seed and training settings without the defense."""
    import dataclasses

    from bench.defenses import Defense
    from bench.sources import ModelDescription, load_model

    if not isinstance(model, Defense):
        return None
    if model.declaration.trained is None:
        return model.backbone
    train = dataclasses.replace(train_config_from_cfg(cfg), defense="none", defense_params={}, seed=int(card.seed))
    spec = card.spec()
    print(f"  transfer source: the undefended {spec.name} seed {card.seed}", flush=True)
    return load_model(info, ModelDescription("zoo", {"spec": spec, "train": train, "zoo_dir": cfg.paths.zoo_dir,
                                                     "data_root": cfg.data.root})).model


def check_trained_as_declared(model: torch.nn.Module, card) -> None:
    """A trained defense's weights must have been trained with its method (a row must not mislabel weights)."""
    from bench.defenses import Defense
    from bench.errors import ConfigError

    if not isinstance(model, Defense) or model.declaration.trained is None:
        return
    trained = (card.train or {}).get("defense", "none")
    if trained != model.declaration.trained:
        raise ConfigError(
            f"defense {model.name!r} declares weights trained with {model.declaration.trained!r}, but the model "
            f"{card.name} (seed {card.seed}) was trained with {trained!r}. Train it with "
            f"`python scripts/train.py defense={model.name} ...` or pick the matching defense.")


def add_adaptive_attacks(plan: list, model: torch.nn.Module, backbone, seed: int) -> tuple[str, ...]:
    """Append the adaptive attacks the defense's declaration calls for, at every epsilon of their norm."""
    from bench.checks import BLACK_BOX_KINDS
    from bench.defenses import declaration_of
    from bench.defenses.adaptive import ADAPTIVE, AdaptiveContext, adaptive_attacks
    from bench.evaluate import PlannedAttack

    names = adaptive_attacks(declaration_of(model))
    norms = list(dict.fromkeys(p.attack.norm for p in plan))
    for norm in norms:
        group = [p for p in plan if p.attack.norm == norm]
        epsilons = sorted({e for p in group for e in p.epsilons})
        labels = {e: next(p.label(e) for p in group if e in p.epsilons) for e in epsilons}
        gradient = next((dict(p.attack.params) for p in group if p.attack.name == "apgd"), {})
        gradient = {k: v for k, v in gradient.items() if k in ("steps", "restarts", "rho")}
        context = AdaptiveContext(norm, seed, gradient, backbone)
        for name in names:
            attack_id = name if len(norms) == 1 else f"{name}_{norm}"
            adaptive = PlannedAttack(attack_id, ADAPTIVE[name].build(context), epsilons, labels)
            # white-box adaptive attacks go before the battery's black-box ones: a sample that only a black-box
            # attack breaks then really is one every white-box attack (BPDA and EoT included) left robust
            black = [i for i, p in enumerate(plan) if p.attack.kind in BLACK_BOX_KINDS]
            at = black[0] if black and adaptive.attack.kind not in BLACK_BOX_KINDS else len(plan)
            plan.insert(at, adaptive)
    return tuple(names)


def prepare(cfg: DictConfig, supplied=None) -> Prepared:
    """Build attacks, load data, train-or-load the model, wrap it in its defense: every refusal happens here.

    ``supplied`` (a ``bench.sources.Loaded``) is a model given directly (``bench.api.evaluate_model``).
    """
    from bench.attacks.base import AttackContext
    from bench.data import load_split
    from bench.defenses import build_defense

    torch.manual_seed(int(cfg.seed))
    info = dataset_info_from_cfg(cfg)
    defense_spec = defense_spec_from_cfg(cfg)
    plan = build_plan(cfg)
    split = load_split(
        info.flag, str(cfg.dataset.split), info.size, cfg.data.root, bool(cfg.data.download),
        cfg.dataset.get("n_examples"), int(cfg.dataset.get("subset_seed", cfg.seed)),
    )
    loaded = supplied if supplied is not None else load_classifier(cfg, info)
    card = loaded.card
    device = str(cfg.device)
    model = build_defense(defense_spec, loaded.model)
    check_trained_as_declared(model, card)
    model = model.to(device).eval()
    backbone = undefended_backbone(cfg, info, model, card)
    if backbone is not None:
        backbone = backbone.to(device).eval()
    context = AttackContext(info, cfg.data.root, str(cfg.paths.zoo_dir), train_config_from_cfg(cfg), device, card)
    for planned in plan:
        planned.attack.prepare(context)
    adaptive = add_adaptive_attacks(plan, model, backbone, int(cfg.seed))
    battery = cfg.get("battery")
    mode = str(battery.get("mode", "independent")) if battery else "independent"
    from bench.defenses import Defense

    label = model.describe() if isinstance(model, Defense) else "none"
    if adaptive:
        print(f"defense {label}: {model.declaration.summary()}; adaptive attacks (white-box before Square, transfer last): "
              f"{', '.join(adaptive)}", flush=True)
    prep = Prepared(info, split, model, card, plan, device, mode, str(battery.name) if battery else None,
                    label, adaptive, backbone, dict(loaded.reported))
    evaluation_checks_wanted(cfg, prep)  # a bad checks.evaluation fails here, before any attack
    return prep


def open_records(cfg: DictConfig, prep: Prepared):
    """The record set of this evaluation: its own folder per configuration and weights, so a rerun resumes."""
    from bench.config import config_hash, result_config
    from bench.records import FORMAT_VERSION, RecordSet

    fingerprint = {
        "format": FORMAT_VERSION, "config": result_config(cfg), "weights_sha256": prep.card.sha256,
        "n": len(prep.split), "batch_size": int(cfg.eval.batch_size),
    }
    if prep.adaptive:
        # the declaration in code, not the config, picks a defense's adaptive attacks and BPDA's gradient: a version
        # that changes either must not resume into batches attacked the old way (undefended folders keep theirs)
        from bench.defenses import declaration_of

        fingerprint["adaptive"] = list(prep.adaptive)
        fingerprint["declaration"] = declaration_of(prep.model).as_dict()
    folder = cfg.records.get("dir")
    if not folder:
        folder = Path(str(cfg.paths.records_root)) / prep.info.track / prep.model_id / f"{config_hash(cfg)}-{prep.card.sha256[:8]}"
    return RecordSet.open(folder, fingerprint)


def run_experiment(cfg: DictConfig, output_dir: str | Path, supplied=None) -> list[dict]:
    """Train-or-load the model, attack (resuming from any records already written), then summarise.

    Per-sample records are written batch by batch and are the source of truth;
    summary.json, the leaderboard rows and the W&B run are derived from them
    once every batch of the evaluation is on disk. Nothing is written to the
    leaderboard before that, so a bad config or a crash leaves no partial row.
    """
    from bench.evaluate import evaluate
    from bench.records import shard_ranges

    prep = prepare(cfg, supplied)
    records = open_records(cfg, prep)
    batch_size = int(cfg.eval.batch_size)
    n = len(prep.split)
    num_shards, shard = int(cfg.eval.get("num_shards", 1)), int(cfg.eval.get("shard", 0))
    batches = shard_ranges(n, batch_size, num_shards, shard)
    print(f"{prep.info.track} {prep.split.split} n={n}  model {prep.card.name} (seed {prep.card.seed})  "
          f"records {records.root}" + (f"  shard {shard + 1}/{num_shards}" if num_shards > 1 else ""), flush=True)

    def save_examples(examples) -> None:
        meta = {"dataset": prep.info.flag, "size": prep.info.size, "model": prep.model_id, "defense": prep.defense,
                "attack": f"battery:{prep.battery_name}" if prep.battery_name else prep.plan[0].attack_id,
                "norm": examples.norm}
        records.write_extra("examples.npz", lambda tmp: examples.save(tmp, meta))

    started = time.perf_counter()
    ran = evaluate(prep.model, prep.split, prep.plan, batches, records, prep.device, prep.mode, int(cfg.seed),
                   save_examples, int(cfg.eval.get("n_examples", 8)),
                   str(cfg.eval.get("model_form", "auto")))
    print(f"  {ran} batch(es) attacked in {time.perf_counter() - started:.1f}s", flush=True)
    with records.finalize_lock():
        missing = records.missing_batches(n, batch_size)
        if missing:
            print(f"  shard done; {len(missing)} batch(es) of this evaluation are not in {records.root} yet: "
                  "the last shard to finish writes the summary and leaderboard rows.", flush=True)
            return []
        return finalize(cfg, prep, records, output_dir)


def training_text(card) -> str:
    """The row's ``train`` column: a submission's own summary, or the zoo's training settings from the card."""
    from bench.zoo import describe_training

    if not card.train:
        return ""
    return str(card.train["summary"]) if card.train.get("summary") else describe_training(card.train)


def clean_predictions(frame, info: DatasetInfo):
    """The clean labels, predictions and scores of every evaluated sample, from the records."""
    import numpy as np

    from bench.checks import CleanPredictions

    first = frame.drop_duplicates("index").sort_values("index", kind="stable")
    labels = np.array(first["label"].tolist())
    preds = np.array(first["clean_pred"].tolist())
    scores = np.array([np.asarray(s, dtype=float) for s in first["clean_scores"].tolist()])
    return CleanPredictions(info.flag, info.size, info.task_type, info.num_classes, labels, preds, scores)


def finalize(cfg: DictConfig, prep: Prepared, records, output_dir: str | Path) -> list[dict]:
    """Records -> summary rows with provenance and flags -> summary.json, the local leaderboard, W&B."""
    import datetime as dt

    from bench.checks import attach_flags
    from bench.config import config_hash, to_dict
    from bench.evaluate import summary_rows
    from bench.leaderboard import track_path, upsert_rows
    from bench.leaderboard.admission import battery_hash
    from bench.logging import make_sink

    frame = records.read()
    info, card = prep.info, prep.card
    rows = summary_rows(frame, prep.plan, prep.mode, prep.battery_name if len(prep.plan) > 1 else None,
                        info.task_type, info.flag, int(cfg.seed))
    battery = cfg.get("battery")
    battery_cfg = to_dict(battery) if battery and battery.get("attacks") else None
    common = {
        "dataset": info.flag, "size": info.size, "split": prep.split.split, "model": prep.model_id,
        "train": training_text(card), "defense": prep.defense, "arch": card.arch,
        "recipe": card.recipe, "battery": prep.battery_name or "", "battery_hash": battery_hash(battery_cfg),
        "adaptive": ";".join(prep.adaptive),
        "seed": int(cfg.seed), "tag": str(cfg.get("tag", "")), "config_hash": config_hash(cfg),
        "weights_sha256": card.sha256, "git_commit": _git_commit(), "versions": _versions(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    rows = [{**common, **r} for r in rows]
    for r in rows:  # the authors' number beside ours, on the rows that rank (the battery's worst case)
        if r["kind"] == "battery" and prep.reported and r["eps_label"] in prep.reported:
            r["reported_robust_acc"] = float(prep.reported[r["eps_label"]])
    fired = run_all_checks(cfg, prep, frame)
    attach_flags(rows, list(fired))
    for flag, why in fired.items():
        print(f"  check {flag}: {why}", flush=True)

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = json.dumps(_json_safe(rows), indent=2) + "\n"
    for target in (output_dir / "summary.json", records.root / "summary.json"):
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(summary)
        tmp.replace(target)
    written = []
    for norm in sorted({r["norm"] for r in rows}):
        path = track_path(cfg.paths.leaderboard_dir, info.flag, info.size, norm)
        written.append(upsert_rows(path, [r for r in rows if r["norm"] == norm]))
    sink = make_sink(to_dict(cfg.logger), to_dict(cfg), name=f"{info.track}-{prep.model_id}-{common['config_hash']}")
    try:
        sink.log_results(rows, frame, records.root / "examples.npz")
    finally:
        sink.finish()
    print(format_table(rows), flush=True)
    print(f"summary: {output_dir / 'summary.json'}", flush=True)
    print(admission_note(rows, written), flush=True)
    return rows


def evaluation_checks_wanted(cfg: DictConfig, prep: Prepared) -> bool:
    """checks.evaluation: true/false, or auto = for standard-battery and defended runs."""
    from bench.errors import ConfigError

    setting = str((cfg.get("checks") or {}).get("evaluation", "auto")).lower()
    if setting not in ("auto", "true", "false"):
        raise ConfigError(f"checks.evaluation={setting!r}; choose auto, true or false.")
    if setting != "auto":
        return setting == "true"
    return prep.battery_name == "standard" or prep.defense != "none"


def run_all_checks(cfg: DictConfig, prep: Prepared, frame) -> dict[str, str]:
    """Model checks on a probe batch, prediction checks on the whole split, evaluation checks on the records."""
    from bench.checks import EvaluationProbe, run_evaluation_checks, run_model_checks, run_prediction_checks

    info = prep.info
    probe = slice(0, min(32, len(prep.split)))
    fired = run_model_checks(prep.model, prep.split.images[probe].to(prep.device),
                             prep.split.labels[probe].to(prep.device), info.task)
    fired.update(run_prediction_checks(clean_predictions(frame, info)))
    if not evaluation_checks_wanted(cfg, prep):
        print("  evaluation checks skipped (checks.evaluation=auto: neither the standard battery nor a defense); "
              "the rows' `unreliable` is false by default", flush=True)
        return fired
    for norm in dict.fromkeys(p.attack.norm for p in prep.plan):
        group = [p for p in prep.plan if p.attack.norm == norm]
        steps = next((int(p.attack.params.get("steps", 100)) for p in group if p.attack.name == "apgd"), 100)
        evaluation = EvaluationProbe(prep.model, prep.backbone, frame, prep.split.images, prep.split.labels, info.task,
                                     norm, sorted({e for p in group for e in p.epsilons}), steps, int(cfg.seed),
                                     prep.device)
        fired.update(run_evaluation_checks(evaluation))
    return fired


def admission_note(rows: list[dict], written: list[Path]) -> str:
    """Where the rows went and whether the leaderboard would rank them (and how to promote them)."""
    from bench.leaderboard import format_value
    from bench.leaderboard.admission import admit, group_evaluations

    stored = [{k: format_value(v) for k, v in r.items()} for r in rows]
    (evaluation,) = group_evaluations(stored)
    admission = admit(evaluation)
    where = ", ".join(str(p) for p in written)
    if admission.ranked:
        return (f"leaderboard rows: {where} (local). This evaluation meets the admission rules; "
                "`medbench promote` (python scripts/promote.py) copies it into results/leaderboard/.")
    return (f"leaderboard rows: {where} (local). Not rankable: {'; '.join(admission.reasons)}. "
            "It stays out of results/ (see `medbench promote --help`).")
