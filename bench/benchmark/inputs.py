"""What a benchmark run measures on: the model (zoo, checkpoint, quick training or random weights), the machine.

A speed benchmark needs a model of the right architecture more than a good
one, so when the zoo has none it can train one briefly or use random weights;
either is said in the output and the results file, because robust accuracies
of such a model say nothing about the recipe.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from bench.config import CONF_DIR
from bench.errors import CheckpointError, unknown_choice
from bench.models import Classifier, ModelSpec, build_model, load_checkpoint
from bench.train import TrainConfig
from bench.zoo import entries, get_or_train, zoo_path

IF_MISSING = ("error", "train", "random")
QUICK_EPOCHS = 3  # a model trained this briefly is flagged as a timing stand-in


@dataclass
class LoadedModel:
    model: Classifier
    name: str
    description: str  # where it came from, for the output and the results file


def model_spec(name: str) -> ModelSpec:
    """The recipe of ``conf/model/<name>.yaml``."""
    path = CONF_DIR / "model" / f"{name}.yaml"
    if not path.exists():
        raise unknown_choice("model", name, [p.stem for p in (CONF_DIR / "model").glob("*.yaml")],
                             "Pass --model with one of them (or --checkpoint PATH).")
    m = OmegaConf.load(path)
    return ModelSpec(str(m.name), str(m.arch), str(m.recipe), False, m.get("input_size"),
                     float(m.get("mean", 0.5)), float(m.get("std", 0.5)))


def _undefended(weights: Path) -> bool:
    """Whether the zoo entry's card says it was trained without a defense (adversarial or noise training)."""
    import json

    try:
        train = json.loads(weights.with_suffix(".json").read_text()).get("train", {})
    except (OSError, ValueError):
        return False
    return str(train.get("defense", "none") or "none") == "none"


def preferred_entry(existing: list[Path]) -> Path:
    """The zoo entry to time: the newest undefended one (a TRADES or noise-trained model shares the recipe's name
    and seed, but is not the model a speed table describes); the newest of all only if none is undefended."""
    return max([p for p in existing if _undefended(p)] or existing, key=lambda p: p.stat().st_mtime)


def load_model(
    name: str, flag: str, size: int, in_chans: int, num_classes: int, zoo: Path, seed: int = 0,
    checkpoint: Path | None = None, if_missing: str = "error", train_epochs: int = 1, data_root: str | None = None,
    device: str = "cpu",
) -> LoadedModel:
    """A checkpoint if given, else the zoo's model; if the zoo has none, ``if_missing`` decides (error/train/random)."""
    if checkpoint is not None:
        model, card = load_checkpoint(checkpoint, in_chans, num_classes)
        return LoadedModel(model, card.name, f"{checkpoint} (test acc {card.metrics.get('test_acc', float('nan')):.3f})")
    if if_missing not in IF_MISSING:
        raise unknown_choice("--if-missing", if_missing, IF_MISSING)
    spec = model_spec(name)
    existing = entries(zoo, flag, size, spec.name, seed)  # however trained (the newest): timing needs the recipe, not the budget
    path = preferred_entry(existing) if existing else zoo_path(zoo, flag, size, spec.name, TrainConfig(epochs=train_epochs, seed=seed))
    existed = bool(existing)
    if existed or if_missing == "train":
        try:
            if existed:
                model, card = load_checkpoint(path, in_chans, num_classes)
            else:
                model, card, path = get_or_train(spec, flag, size, data_root, TrainConfig(epochs=train_epochs, seed=seed, device=device),
                                                 zoo, in_chans, num_classes)
            epochs = int(card.train.get("epochs", 0) or 0)
            how = f"trained {epochs} epoch(s)" + ("" if existed else " by this run")
            if epochs <= QUICK_EPOCHS:
                how += "; a QUICK training for timing: its robust accuracies are a weak model's"
            return LoadedModel(model, spec.name, f"{path} ({how}, test acc {card.metrics.get('test_acc', float('nan')):.3f})")
        except CheckpointError:
            raise
        except Exception as exc:  # training failed (out of memory, no data): time a random model instead
            if existed:
                raise
            print(f"note: training {spec.name} failed ({type(exc).__name__}: {str(exc)[:200]}); using random weights", flush=True)
    elif if_missing == "error":
        raise CheckpointError(
            f"no trained model at {path}. Pass --zoo DIR (e.g. the main checkout's models/), --checkpoint PATH, "
            f"--if-missing train (train --train-epochs epochs first) or --if-missing random (timing only)."
        )
    torch.manual_seed(seed)
    model = build_model(spec, in_chans, num_classes).eval()
    return LoadedModel(model, spec.name, f"{spec.name} with RANDOM weights (seed {seed}): timings are valid, "
                                         f"robust accuracies mean nothing")


def machine(device: str) -> str:
    """One line: CPU model, cores, torch threads, GPU, torch version, load at the start (the CPU may be shared)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    parts = [f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} with {torch.get_num_threads()} threads"]
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(torch.device(device))}")
    if hasattr(os, "getloadavg"):
        parts.append("load average at start {:.1f}".format(os.getloadavg()[0]))
    return "; ".join(parts)
