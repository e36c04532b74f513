"""The model zoo: where trained checkpoints live, and reuse-or-train for experiments."""

from __future__ import annotations

from pathlib import Path

from bench.models import Classifier, ModelCard, ModelSpec, load_checkpoint
from bench.train import TrainConfig, train_classifier


def zoo_path(zoo_dir: str | Path, flag: str, size: int, model_name: str, seed: int) -> Path:
    """``<zoo>/<flag>_<size>/<model>_seed<seed>.safetensors`` (the card sits beside it)."""
    return Path(zoo_dir) / f"{flag}_{size}" / f"{model_name}_seed{seed}.safetensors"


def get_or_train(
    spec: ModelSpec,
    flag: str,
    size: int,
    root: str | Path | None,
    train_cfg: TrainConfig,
    zoo_dir: str | Path,
    in_chans: int,
    num_classes: int,
    command: str = "",
) -> tuple[Classifier, ModelCard, Path]:
    """Load the zoo's checkpoint for this (dataset, size, model, seed), training it first if absent."""
    path = zoo_path(zoo_dir, flag, size, spec.name, train_cfg.seed)
    if path.exists():
        print(f"reusing trained model {path}", flush=True)
        model, card = load_checkpoint(path, in_chans, num_classes)
        return model, card, path
    print(f"no trained model at {path}; training {spec.name} on {flag}_{size} ({train_cfg.epochs} epochs)", flush=True)
    train_classifier(spec, flag, size, root, train_cfg, path, command=command)
    model, card = load_checkpoint(path, in_chans, num_classes)
    return model, card, path
