"""One corruption-track evaluation: a model (with its defense) on every MedMNIST-C corruption and severity.

``scripts/corrupt.py`` calls :func:`run_corruption_track`. Everything that can be refused is refused
before any compute (unknown corruption, missing medmnistc or ImageMagick, a dataset without a
MedMNIST-C list, bad settings). Each corruption's predictions are saved to the evaluation's records
folder as soon as they exist, so a killed run resumes at the next corruption, and the corrupted
images are cached (with their checksums) so a second model on the same data reuses them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.corruptions.catalog import MEDMNISTC_SIZE, SEVERITIES, Corruption, medmnistc_version, select
from bench.corruptions.generate import corrupted_set, sample_seed, to_float, to_uint8
from bench.corruptions.metrics import accuracy, balanced_error
from bench.errors import ConfigError
from bench.leaderboard.corruption import ALL, CORRUPTION, MEAN
from bench.metrics import BOOTSTRAP_RESAMPLES, auc, percentile_interval

RECORDS_FORMAT = 1
SPEED_ONLY = ("batch_size", "cache_dir")


def settings(cfg) -> dict:
    """The run's corruption settings, checked: names (None = all), batch size, cache folder."""
    c = cfg.corruption
    names = c.get("names")
    if isinstance(names, str):
        names = [n for n in names.split(",") if n]
    batch_size = c.get("batch_size")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"corruption.batch_size={batch_size!r} must be a whole number >= 1.")
    return {"names": list(names) if names else None, "batch_size": batch_size,
            "cache_dir": c.get("cache_dir"), "seed": int(cfg.seed)}


def result_config(cfg) -> dict:
    """What decides the track's numbers given the weights: data, model, defense, corruptions, seed, device type."""
    from omegaconf import OmegaConf

    from bench.config import NOT_RESULT_KEYS

    drop = {*NOT_RESULT_KEYS, "attack", "battery", "eval", "experiment", "device", "certify"}
    data = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
            for k in cfg if k not in drop}
    data["corruption"] = {k: v for k, v in (data.get("corruption") or {}).items() if k not in SPEED_ONLY}
    data["device"] = torch.device(str(cfg.device)).type
    return data


def config_hash(cfg) -> str:
    return hashlib.sha256(json.dumps(result_config(cfg), sort_keys=True, default=str).encode()).hexdigest()[:12]


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int, device: str, seed: int, task) -> tuple:
    """Predictions and scores of ``images``; a randomised defense draws its noise from ``seed`` (reproducible)."""
    torch.manual_seed(seed)
    preds, scores = [], []
    for start in range(0, len(images), batch_size):
        logits = model(images[start:start + batch_size].to(device)).float().cpu()
        preds.append(task.predict(logits))
        scores.append(task.scores(logits))
    return torch.cat(preds).numpy(), torch.cat(scores).numpy()


def _measures(labels, pred, scores, task_type: str, idx: np.ndarray) -> dict:
    return {"balanced_error": balanced_error(labels, pred), "acc": accuracy(labels, pred),
            "auc": auc(labels, scores, task_type), "resampled": balanced_error(labels, pred, idx)}


def _load_done(folder: Path, fingerprint: dict, name: str) -> dict | None:
    path = folder / f"{name}.json"
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    if saved.get("fingerprint") != json.loads(json.dumps(fingerprint, default=str)):
        raise ConfigError(f"the records folder {folder} holds another evaluation's corruption results ({path.name}'s "
                          "fingerprint differs). Set records.dir to a new folder, or delete that one.")
    return saved


def run_corruption_track(cfg, output_dir) -> list[dict]:
    """Check the config, load data, model and defense, evaluate every corruption and severity, write the rows."""
    from bench.atomic import atomic_write
    from bench.data import load_split
    from bench.defenses.certify import records_folder
    from bench.defenses import Defense, build_defense
    from bench.experiment import (
        _git_commit, _versions, check_trained_as_declared, dataset_info_from_cfg, defense_spec_from_cfg,
        load_classifier,
    )
    from bench.zoo import describe_training

    run = settings(cfg)
    info = dataset_info_from_cfg(cfg)
    corruptions = select(info.flag, run["names"])  # refuses unknown names and a missing medmnistc here
    digest = config_hash(cfg)
    split = load_split(info.flag, str(cfg.dataset.split), info.size, cfg.data.root, bool(cfg.data.download),
                       cfg.dataset.get("n_examples"), int(cfg.dataset.get("subset_seed", cfg.seed)))
    loaded = load_classifier(cfg, info)
    card, device = loaded.card, str(cfg.device)
    model = build_defense(defense_spec_from_cfg(cfg), loaded.model)
    check_trained_as_declared(model, card)
    model = model.to(device).eval()
    defense = model.describe() if isinstance(model, Defense) else "none"
    model_id = f"{card.name}_seed{card.seed}"
    task, task_type = info.task, info.task_type
    labels = split.labels.numpy()
    clean_uint8, indices = to_uint8(split.images), split.indices.numpy()
    n = len(split)
    idx = np.random.default_rng(run["seed"]).integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))
    cache = Path(str(run["cache_dir"])) / f"{info.flag}_{info.size}_{split.split}" if run["cache_dir"] else None
    folder = records_folder(cfg, info.track, model_id, digest, card.sha256, kind="corruptions")
    fingerprint = {"format": RECORDS_FORMAT, "config": result_config(cfg), "weights_sha256": card.sha256,
                   "indices": hashlib.sha256(indices.astype(np.int64).tobytes()).hexdigest()}
    print(f"{info.track} {split.split} n={n}  model {card.name} (seed {card.seed})  defense {defense}  "
          f"{len(corruptions)} corruption(s) x {len(SEVERITIES)} severities  medmnistc {medmnistc_version()}  "
          f"config {digest}", flush=True)

    clean_pred, clean_scores = predict(model, split.images, run["batch_size"], device, run["seed"], task)
    clean = _measures(labels, clean_pred, clean_scores, task_type, idx)
    results: dict[tuple[str, str], dict] = {}
    resampled: dict[tuple[str, str], np.ndarray] = {}
    for corruption in corruptions:
        saved = _load_done(folder, fingerprint, corruption.name)
        if saved is None:
            saved = _evaluate_corruption(corruption, clean_uint8, indices, model, task, run, device, cache)
            saved["labels"], saved["indices"] = labels.tolist(), indices.tolist()
            atomic_write(folder / f"{corruption.name}.json", json.dumps({"fingerprint": fingerprint, **saved}, default=str))
            status = f"{saved['seconds_total']:.1f}s"
        else:
            status = "resumed from records"
        for s in SEVERITIES:
            entry = saved["severities"][str(s)]
            pred = np.asarray(entry["pred"])
            results[(corruption.name, str(s))] = {**_measures(labels, pred, np.asarray(entry["scores"]), task_type, idx),
                                                 "sha256": entry["sha256"], "seconds": entry["seconds"],
                                                 "params": corruption.params[s - 1]}
            resampled[(corruption.name, str(s))] = results[(corruption.name, str(s))]["resampled"]
        be = [results[(corruption.name, str(s))]["balanced_error"] for s in SEVERITIES]
        print(f"  {corruption.name:<18} balanced error by severity " + " ".join(f"{v:.3f}" for v in be)
              + f"  ({status})", flush=True)

    common = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "dataset": info.flag,
        "size": info.size, "split": split.split, "n": n, "model": model_id,
        "train": describe_training(card.train) if card.train else "", "defense": defense, "arch": card.arch,
        "recipe": card.recipe, "corruption_seed": run["seed"], "medmnistc": medmnistc_version(),
        "clean_balanced_error": clean["balanced_error"], "clean_acc": clean["acc"], "clean_auc": clean["auc"],
        "device": torch.device(device).type, "tag": str(cfg.get("tag", "")), "config_hash": digest,
        "weights_sha256": card.sha256, "git_commit": _git_commit(), "versions": _versions(),
    }

    def row(name: str, family: str, severity: str, keys: list[tuple[str, str]], applied_at: int, params: str) -> dict:
        parts = [results[k] for k in keys]
        mean_resampled = np.mean([resampled[k] for k in keys], axis=0)
        lo, hi = percentile_interval(mean_resampled)
        be = float(np.mean([p["balanced_error"] for p in parts]))
        aucs = [p["auc"] for p in parts if not np.isnan(p["auc"])]
        sha = parts[0]["sha256"] if len(parts) == 1 else hashlib.sha256(
            ";".join(p["sha256"] for p in parts).encode()).hexdigest()
        return {**common, "corruption": name, "family": family, "severity": severity, "params": params,
                "applied_at": applied_at, "images_sha256": sha, "balanced_error": be,
                "balanced_error_lo": min(lo, be), "balanced_error_hi": max(hi, be),
                "balanced_error_increase": be - clean["balanced_error"],
                "acc": float(np.mean([p["acc"] for p in parts])), "auc": float(np.mean(aucs)) if aucs else None,
                "seconds": round(sum(p["seconds"] for p in parts), 3)}

    rows = []
    for c in corruptions:
        applied_at = MEDMNISTC_SIZE if c.spatial else info.size
        for s in SEVERITIES:
            rows.append(row(c.name, c.family, str(s), [(c.name, str(s))], applied_at, c.params[s - 1]))
        rows.append(row(c.name, c.family, MEAN, [(c.name, str(s)) for s in SEVERITIES], applied_at, ""))
    if len(corruptions) > 0:
        rows.append(row(ALL, "", MEAN, list(results), info.size, ""))
    output_dir = Path(output_dir)
    atomic_write(output_dir / "summary.json", json.dumps(rows, indent=2, default=str) + "\n")
    path = CORRUPTION.upsert(CORRUPTION.path(cfg.paths.leaderboard_dir, info.flag, info.size), rows)
    top = rows[-1]
    print(f"clean balanced error {clean['balanced_error']:.3f}; mean over {len(corruptions)} corruption(s) x 5 "
          f"severities {top['balanced_error']:.3f} [{top['balanced_error_lo']:.3f}, {top['balanced_error_hi']:.3f}]",
          flush=True)
    print(f"summary: {output_dir / 'summary.json'}\ncorruption rows: {path} (local; promote with "
          "python scripts/promote.py)", flush=True)
    return rows


def _evaluate_corruption(corruption: Corruption, clean_uint8: np.ndarray, indices: np.ndarray, model, task,
                         run: dict, device: str, cache: Path | None) -> dict:
    """Corrupt (or load the cached images), predict every severity; what the records keep for this corruption."""
    started = time.perf_counter()
    images = corrupted_set(clean_uint8, indices, corruption, run["seed"], cache)
    generated = time.perf_counter() - started
    out = {"corruption": corruption.name, "severities": {}, "generation_seconds": generated}
    for s in SEVERITIES:
        t0 = time.perf_counter()
        pred, scores = predict(model, to_float(images.severity(s)), run["batch_size"], device,
                               sample_seed(run["seed"], corruption.name, s, -1), task)
        out["severities"][str(s)] = {"pred": pred.tolist(), "scores": np.round(scores, 6).tolist(),
                                     "sha256": images.sha256[s - 1], "seconds": time.perf_counter() - t0}
    out["seconds_total"] = time.perf_counter() - started
    return out
