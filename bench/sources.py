"""Where models come from: one place that turns a description into a classifier (RobustBench's ``load_model``).

Three descriptions, a registry each:

- ``zoo``: a registered recipe (``conf/model/``) and its training settings; the
  zoo's entry trained with exactly those settings, trained first if missing;
- ``checkpoint``: a ``.safetensors`` file with the JSON card beside it;
- ``target``: a user's own architecture, ``_target_`` (an importable
  ``module.Class``) with keyword arguments, plus a safetensors file. Importing
  runs the user's code: that is fine for their own notebook, never for a
  submission (``bench/submission.py`` accepts only registered recipes).

Whatever the description, weights are read only through safetensors, after
the file's first bytes show it is one (a pickle is never unpickled, never
passed to ``torch.load``), and must fit the architecture exactly: the first
mismatched key is named with both shapes. The defense (``bench/defenses``)
then wraps the classifier.
"""

from __future__ import annotations

import importlib
import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from bench.data import DatasetInfo
from bench.errors import CheckpointError, ConfigError
from bench.models import Classifier, ModelCard, ModelSpec, load_checkpoint, sha256_file
from bench.registry import Registry

PICKLE_MAGIC = (b"\x80",)  # pickle protocol 2+ starts with PROTO (0x80)
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip of pickles
MAX_HEADER = 100 * 1024 * 1024  # safetensors refuses headers above 100 MB too


def safetensors_header(path: str | Path) -> dict:
    """The JSON header of a safetensors file, or a CheckpointError saying what the file is instead.

    Only the first bytes are read and parsed as JSON: nothing is unpickled,
    whatever the file holds.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist. Put the weights file there or fix the path.")
    with open(path, "rb") as fh:
        head = fh.read(8)
        size = path.stat().st_size
        convert = "Convert it with safetensors.torch.save_file(model.state_dict(), 'model.safetensors')."
        if head.startswith(ZIP_MAGIC) or head[:1] in PICKLE_MAGIC:
            kind = "a torch.save zip archive" if head.startswith(ZIP_MAGIC) else "a Python pickle"
            raise CheckpointError(f"{str(path)!r} is {kind}, not safetensors; medbench never unpickles weights. {convert}")
        if len(head) < 8:
            raise CheckpointError(f"{str(path)!r} is {size} bytes, too short to be safetensors. {convert}")
        (length,) = struct.unpack("<Q", head)
        if length <= 0 or length > min(MAX_HEADER, size - 8):
            raise CheckpointError(f"{str(path)!r} is not a safetensors file (its first 8 bytes do not give a header "
                                  f"length that fits the file). {convert}")
        raw = fh.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{str(path)!r} is not a safetensors file (its header is not JSON). {convert}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{str(path)!r} is not a safetensors file (its header is not a JSON object). {convert}")
    return header


def load_weights_strict(module: nn.Module, path: str | Path) -> None:
    """Load safetensors weights into ``module``; any missing, unexpected or mis-shaped tensor is refused by name."""
    from safetensors.torch import load_file

    header = safetensors_header(path)
    given = {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    for key, shape in expected.items():
        if key in given and given[key] != shape:
            raise CheckpointError(f"weights {Path(path).name}: tensor {key!r} has shape {list(given[key])} in the file "
                                  f"but the architecture expects {list(shape)}. Check the declared architecture "
                                  "(arch, recipe, number of classes and channels) against the one trained.")
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing or unexpected:
        first = (f"the architecture's tensor {missing[0]!r} is missing from the file" if missing
                 else f"the file's tensor {unexpected[0]!r} is not in the architecture")
        raise CheckpointError(f"weights {Path(path).name} do not fit the declared architecture: {first} "
                              f"({len(missing)} missing, {len(unexpected)} unexpected). Check the architecture "
                              "and that the state dict was saved from the model itself (no 'module.' prefixes).")
    module.load_state_dict(load_file(str(path)), strict=True)


# --------------------------------------------------------------------------------------------------
# the descriptions
# --------------------------------------------------------------------------------------------------
@dataclass
class Loaded:
    """A classifier (inputs in [0, 1], logits out), its card, and the file it came from."""

    model: nn.Module
    card: ModelCard
    path: Path | None = None
    reported: dict[str, float] = field(default_factory=dict)  # eps label -> robust accuracy the authors report


Loader = Callable[..., Loaded]
SOURCES: Registry[Loader] = Registry("model source", "Describe the model as zoo, checkpoint or target.")


@SOURCES.register("zoo")
def from_zoo(info: DatasetInfo, spec: ModelSpec, train: object, zoo_dir: str | Path, data_root: str | None = None,
             command: str = "") -> Loaded:
    """The zoo's ``spec`` trained with exactly ``train``'s settings (``bench.zoo``), trained now if missing."""
    from bench.zoo import get_or_train

    model, card, path = get_or_train(spec, info.flag, info.size, data_root, train, zoo_dir, info.n_channels,
                                     info.num_classes, command=command)
    return Loaded(model, card, path)


@SOURCES.register("checkpoint")
def from_checkpoint(info: DatasetInfo, path: str | Path) -> Loaded:
    """A safetensors file with its card; the card must describe a model for ``info``'s dataset."""
    safetensors_header(path)
    model, card = load_checkpoint(Path(path), info.n_channels, info.num_classes)
    return Loaded(model, card, Path(path))


def import_target(target: str) -> Callable[..., nn.Module]:
    """``package.module.Class`` -> the class (or factory); errors say what to fix."""
    module_name, _, attr = target.rpartition(".")
    if not module_name:
        raise ConfigError(f"_target_ {target!r} is not an importable path; write it as 'package.module.ClassName'.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} for _target_ {target!r} ({exc}). Install the package "
                          "or put it on PYTHONPATH.") from None
    if not hasattr(module, attr):
        raise ConfigError(f"{module_name!r} has no {attr!r} (from _target_ {target!r}).")
    return getattr(module, attr)


@SOURCES.register("target")
def from_target(info: DatasetInfo, target: str, weights: str | Path, kwargs: Mapping[str, object] | None = None,
                name: str = "", seed: int = 0) -> Loaded:
    """A user's architecture (``_target_`` + kwargs) with safetensors weights; inputs in [0, 1], logits out."""
    factory = import_target(target)
    module = factory(**dict(kwargs or {}))
    if not isinstance(module, nn.Module):
        raise ConfigError(f"_target_ {target!r} built a {type(module).__name__}, not a torch.nn.Module.")
    load_weights_strict(module, weights)
    module.eval()
    card = card_for(module, info, name or target.rpartition(".")[2], arch=target, recipe="target", seed=seed,
                    sha256=sha256_file(weights))
    card.train = {"target_kwargs": dict(kwargs or {})}
    return Loaded(module, card, Path(weights))


def card_for(model: nn.Module, info: DatasetInfo, name: str, arch: str = "custom", recipe: str = "custom",
             seed: int = 0, sha256: str = "") -> ModelCard:
    """A card for a model that came without one (a notebook's module, a submission): its weights' hash names it."""
    return ModelCard(name=name, arch=arch, recipe=recipe, dataset=info.flag, size=info.size, seed=seed,
                     in_chans=info.n_channels, num_classes=info.num_classes, task=info.task_type,
                     sha256=sha256 or state_dict_sha256(model), spatial_dims=info.spatial_dims)


def state_dict_sha256(model: nn.Module) -> str:
    """sha256 over a module's tensors (names, shapes, bytes): the identity of in-memory weights."""
    import hashlib

    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def recipe_classifier(info: DatasetInfo, spec: ModelSpec, weights: str | Path) -> Classifier:
    """A registered recipe built for ``info`` with weights from a file (no card needed): for submissions."""
    from bench.models import build_model

    model = build_model(spec, info.n_channels, info.num_classes, info.size, info.spatial_dims)
    load_weights_strict(model, weights)
    return model.eval()


@dataclass
class ModelDescription:
    """A description a config or submission gives: which source and its arguments."""

    source: str
    args: dict = field(default_factory=dict)


def load_model(info: DatasetInfo, description: ModelDescription) -> Loaded:
    """The one entry point: ``description.source`` (zoo | checkpoint | target) with its arguments."""
    return SOURCES[description.source](info, **description.args)
