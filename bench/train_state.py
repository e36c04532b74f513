"""Training that survives a kill: the whole state after every epoch, restored to continue bit for bit.

A run that trains for hours (the MedMNIST baselines' 100 epochs, a zoo of architectures, a sweep job on a
pre-emptible partition) must not start over when it is stopped. After each epoch the trainer writes, in
``.<weights name>.partial/`` beside the checkpoint, ``state.safetensors`` (model, optimiser moments, best weights
so far, random generators) and ``state.json`` (epoch, history, best score, scheduler, elapsed time, and the
settings it belongs to). Both are renamed into place, tensors first, so a kill mid-write leaves the previous epoch's state. No
pickle is written or read. A state whose settings differ from the run's is ignored with a message, and both
files are removed once the checkpoint and its card are saved.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FORMAT = 1


def state_paths(out_path: str | Path) -> tuple[Path, Path]:
    """``<dir>/.<weights name>.partial/state.{safetensors,json}``: a hidden folder, so no zoo glob for
    ``*.safetensors`` or card lookup ever mistakes a training state for a checkpoint."""
    out = Path(out_path)
    folder = out.with_name(f".{out.name}.partial")
    return folder / "state.safetensors", folder / "state.json"


@dataclass
class Progress:
    """Everything the epoch loop carries from one epoch to the next, besides the model and optimiser."""

    epoch: int = 0
    best_key: tuple[float, float] | None = None
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _optimiser_tensors(optimiser: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimiser.state_dict()
    tensors = {f"opt.{index}.{name}": value.detach().cpu().contiguous()
               for index, slots in state["state"].items() for name, value in slots.items()}
    return tensors, {"param_groups": state["param_groups"],
                     "slots": {str(i): sorted(s) for i, s in state["state"].items()}}


def save_state(out_path: str | Path, fingerprint: dict, model: torch.nn.Module, optimiser: torch.optim.Optimizer,
               scheduler, generators: dict[str, torch.Generator], progress: Progress) -> None:
    """Write the state after ``progress.epoch`` epochs (tensors, then the JSON that points at them)."""
    tensor_path, json_path = state_paths(out_path)
    tensor_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in (progress.best_state or {}).items()})
    tensors.update({f"rng.{name}": g.get_state() for name, g in generators.items()})
    tensors["rng.torch"] = torch.get_rng_state()
    optimiser_tensors, optimiser_meta = _optimiser_tensors(optimiser)
    tensors.update(optimiser_tensors)
    scheduler_state = scheduler.state_dict()
    scheduler_state["milestones"] = {str(k): v for k, v in scheduler_state.get("milestones", {}).items()}
    meta = {"format": FORMAT, "fingerprint": fingerprint, "epoch": progress.epoch,
            "best_key": list(progress.best_key) if progress.best_key else None, "best_epoch": progress.best_epoch,
            "history": progress.history, "seconds": progress.seconds, "optimiser": optimiser_meta,
            "scheduler": scheduler_state, "tensor_file": tensor_path.name}
    tmp = tensor_path.with_name(tensor_path.name + f".tmp{os.getpid()}")
    save_file(tensors, str(tmp))
    os.replace(tmp, tensor_path)
    tmp_json = json_path.with_name(json_path.name + f".tmp{os.getpid()}")
    tmp_json.write_text(json.dumps(meta, default=float))
    os.replace(tmp_json, json_path)


def load_state(out_path: str | Path, fingerprint: dict, model: torch.nn.Module, optimiser: torch.optim.Optimizer,
               scheduler, generators: dict[str, torch.Generator]) -> Progress | None:
    """Restore a saved state into the given objects and return its progress; None when there is none to resume."""
    tensor_path, json_path = state_paths(out_path)
    if not json_path.exists() or not tensor_path.exists():
        return None
    try:
        meta = json.loads(json_path.read_text())
        tensors = load_file(str(tensor_path))
    except (OSError, ValueError) as err:
        print(f"not resuming from {json_path.name}: unreadable ({type(err).__name__}); training from the start",
              flush=True)
        return None
    if meta.get("format") != FORMAT or meta.get("fingerprint") != json.loads(json.dumps(fingerprint, default=str)):
        print(f"not resuming from {json_path.name}: it belongs to other training settings; training from the start",
              flush=True)
        return None
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    slots = meta["optimiser"]["slots"]
    optimiser.load_state_dict({
        "state": {int(i): {name: tensors[f"opt.{i}.{name}"] for name in names} for i, names in slots.items()},
        "param_groups": meta["optimiser"]["param_groups"]})
    scheduler_state = meta["scheduler"]
    scheduler_state["milestones"] = Counter({int(k): v for k, v in scheduler_state.get("milestones", {}).items()})
    scheduler.load_state_dict(scheduler_state)
    for name, generator in generators.items():
        generator.set_state(tensors[f"rng.{name}"])
    torch.set_rng_state(tensors["rng.torch"])
    best = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")}
    return Progress(meta["epoch"], tuple(meta["best_key"]) if meta["best_key"] else None, meta["best_epoch"],
                    best or None, meta["history"], meta["seconds"])


def remove_state(out_path: str | Path) -> None:
    for path in state_paths(out_path):
        path.unlink(missing_ok=True)
    try:
        state_paths(out_path)[0].parent.rmdir()
    except OSError:  # absent, or holding a writer's temporary file
        pass
