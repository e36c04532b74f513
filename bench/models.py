"""Classifiers: any timm architecture, a low-resolution recipe, normalisation inside the model.

A *recipe* adapts a timm architecture to MedMNIST's small images. Recipes live
in a registry; adding one is one decorated function. The wrapper normalises
with the dataset mean/std inside ``forward`` so attacks always work in [0, 1].

Checkpoints are safetensors files with a JSON model card beside them. Loading
checks the card's sha256 against the weights and never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from bench.errors import CheckpointError, ConfigError, unknown_choice
from bench.volumes import to_volumes

RecipeFn = Callable[..., nn.Module]
RECIPES: dict[str, RecipeFn] = {}


def register_recipe(name: str) -> Callable[[RecipeFn], RecipeFn]:
    """Register ``fn(arch, in_chans, num_classes, pretrained, image_size=..., **kw) -> nn.Module`` under ``name``."""

    def deco(fn: RecipeFn) -> RecipeFn:
        RECIPES[name] = fn
        return fn

    return deco


HUB_HOST = ("huggingface.co", 443)
HUB_PROBE_TIMEOUT_S = 5.0


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether timm's model hub answers within ``timeout`` (huggingface_hub itself retries for about a minute)."""
    import socket

    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def pretrained_source(pretrained: bool | str) -> str:
    """What a model starts from, for the zoo key and the card: ``scratch``, ``timm-hub`` or ``file:<sha256[:16]>``."""
    if pretrained is False or pretrained in ("", "false", "False", None):
        return "scratch"
    if pretrained is True or pretrained in ("true", "True"):
        return "timm-hub"
    path = Path(str(pretrained)).expanduser()
    if path.suffix != ".safetensors" or not path.is_file():
        raise CheckpointError(
            f"model.pretrained={pretrained!r} is neither true/false nor an existing .safetensors file. Give the "
            f"path of the weights downloaded elsewhere (timm's hub serves model.safetensors; medbench never "
            f"unpickles .pth/.bin files), or true for timm's hub, or false to train from scratch.")
    return f"file:{sha256_file(path)[:16]}"


def _timm(arch: str, in_chans: int, num_classes: int, pretrained: bool | str) -> nn.Module:
    if arch not in timm.list_models():
        import difflib

        close = difflib.get_close_matches(arch, timm.list_models(), n=8, cutoff=0.6)
        raise ConfigError(
            f"unknown timm architecture {arch!r}; similar names: {', '.join(close) or 'none'}. "
            f"Set model.arch to a name from timm.list_models()."
        )
    source = pretrained_source(pretrained)
    kwargs: dict = {"in_chans": in_chans, "num_classes": num_classes}
    if source == "scratch":
        return timm.create_model(arch, pretrained=False, **kwargs)
    if source.startswith("file:"):  # timm adapts the stem to in_chans and drops a classifier of another size
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": str(Path(str(pretrained)).expanduser())},
                                 **kwargs)
    offline = not hub_reachable()
    with _hub_offline(offline):  # offline, a copy in the local hub cache still loads; nothing is retried for a minute
        try:
            return timm.create_model(arch, pretrained=True, **kwargs)
        except Exception as exc:
            why = (f"{HUB_HOST[0]} did not answer within {HUB_PROBE_TIMEOUT_S:g} s and the local hub cache has no copy"
                   if offline else f"{type(exc).__name__}: {str(exc)[:200]}")
            raise CheckpointError(
                f"could not fetch pretrained weights for {arch!r} from timm's model hub ({why}). Download the "
                f"weights on a machine with network (the model.safetensors of the timm model's hub page) and pass "
                f"model.pretrained=/path/to/model.safetensors, or train from scratch with model.pretrained=false."
            ) from None


@contextmanager
def _hub_offline(offline: bool):
    """huggingface_hub's offline mode for one call (it reads HF_HUB_OFFLINE once, at import, into its constants)."""
    if not offline:
        yield
        return
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


@register_recipe("native")
def native(arch: str, in_chans: int, num_classes: int, pretrained: bool = False, **_: object) -> nn.Module:
    """The timm model unchanged (its ImageNet stem downsamples a 28x28 image to 7x7 at once)."""
    return _timm(arch, in_chans, num_classes, pretrained)


@register_recipe("cifar_stem")
def cifar_stem(arch: str, in_chans: int, num_classes: int, pretrained: bool = False, **_: object) -> nn.Module:
    """ResNet-family model with a 3x3 stride-1 first conv and no max-pool (the MedMNIST baseline stem)."""
    model = _timm(arch, in_chans, num_classes, pretrained)
    conv1 = getattr(model, "conv1", None)
    if not isinstance(conv1, nn.Conv2d) or not hasattr(model, "maxpool"):
        raise ConfigError(
            f"recipe 'cifar_stem' needs a ResNet-style model with conv1 and maxpool; {arch!r} has not. "
            f"Use model.recipe=resize (or native) for this architecture."
        )
    model.conv1 = nn.Conv2d(in_chans, conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


SMALL_INPUT = 64  # images up to this side get the small-input adaptations below; larger ones the model as timm builds it


def _module(model: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        model = model[int(part)] if part.isdigit() else getattr(model, part)  # type: ignore[index]
    return model


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, last = path.rpartition(".")
    owner = _module(model, parent) if parent else model
    if last.isdigit():
        owner[int(last)] = new  # type: ignore[index]
    else:
        setattr(owner, last, new)


# timm family (model class) -> (its stem's strided conv, the stem's pooling or None). The small-input stem keeps
# the conv's kernel and weights (pretrained weights still load) and only sets its stride to 1 and drops the pool,
# the way CIFAR-sized inputs are handled in the literature (He et al.'s CIFAR ResNets, MedMNIST's baselines).
STEMS: dict[str, tuple[str, str | None]] = {
    "ResNet": ("conv1", "maxpool"),
    "DenseNet": ("features.conv0", "features.pool0"),
    "EfficientNet": ("conv_stem", None),
    "MobileNetV3": ("conv_stem", None),
    "ConvNeXt": ("stem.0", None),
    "RegNet": ("stem.conv", None),
}


@register_recipe("small_stem")
def small_stem(arch: str, in_chans: int, num_classes: int, pretrained: bool = False, image_size: int = 28,
               **_: object) -> nn.Module:
    """A timm CNN whose stem does not downsample when images are small (<= 64 px): stride-1 stem conv, no stem
    pool, so a 28x28 image reaches the last stage at 2-4 px instead of 1. Larger images get the model unchanged."""
    model = _timm(arch, in_chans, num_classes, pretrained)
    family = type(model).__name__
    if family not in STEMS:
        raise ConfigError(f"recipe 'small_stem' knows the stems of {', '.join(sorted(STEMS))}; {arch!r} is a "
                          f"{family}. Use model.recipe=small_patch for a vision transformer, or native/resize.")
    if image_size <= SMALL_INPUT:
        conv_path, pool_path = STEMS[family]
        conv = _module(model, conv_path)
        conv.stride = (1, 1)
        if pool_path is not None:
            _set_module(model, pool_path, nn.Identity())
    return model


def patch_size_for(image_size: int) -> int:
    """ViT patch side for an image side: 4 up to 32 px (7x7 tokens at 28), 8 up to 64 px, timm's 16 above."""
    return 4 if image_size <= 32 else 8 if image_size <= SMALL_INPUT else 16


@register_recipe("small_patch")
def small_patch(arch: str, in_chans: int, num_classes: int, pretrained: bool = False, image_size: int = 28,
                **_: object) -> nn.Module:
    """A timm vision transformer built for the dataset's image side with a patch that suits it
    (:func:`patch_size_for`): 49 tokens at 28x28, 64 at 64x64, 196 at 224x224."""
    try:
        return timm.create_model(arch, pretrained=pretrained, in_chans=in_chans, num_classes=num_classes,
                                 img_size=image_size, patch_size=patch_size_for(image_size))
    except TypeError as exc:
        raise ConfigError(f"recipe 'small_patch' needs a timm vision transformer that takes img_size and "
                          f"patch_size; {arch!r} does not ({exc}). Use model.recipe=small_stem for a CNN.") from None


@register_recipe("resize")
def resize(arch: str, in_chans: int, num_classes: int, pretrained: bool = False, **_: object) -> nn.Module:
    """The timm model unchanged; the wrapper upsamples inputs to ``input_size`` first."""
    return _timm(arch, in_chans, num_classes, pretrained)


class Classifier(nn.Module):
    """Normalise (and optionally resize) inputs in [0, 1], then run the backbone; returns logits.

    ``spatial_dims`` is 2 for images (NCHW) and 3 for volumes (NCDHW)."""

    def __init__(self, backbone: nn.Module, mean: list[float], std: list[float], input_size: int | None = None,
                 spatial_dims: int = 2):
        super().__init__()
        self.backbone = backbone
        shape = (1, len(mean)) + (1,) * spatial_dims
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(shape))
        self.input_size = input_size
        self.spatial_dims = spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and x.shape[-1] != self.input_size:
            mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
            x = F.interpolate(x, size=(self.input_size,) * self.spatial_dims, mode=mode, align_corners=False)
        return self.backbone((x - self.mean) / self.std)


@dataclass
class ModelSpec:
    """What to build: the model config group's content."""

    name: str
    arch: str
    recipe: str = "cifar_stem"
    pretrained: bool | str = False  # True: timm's hub; a path: a local .safetensors file
    input_size: int | None = None
    mean: float = 0.5
    std: float = 0.5
    volume: str = "acs"  # how the 2D model is made 3D for volume datasets (bench.volumes.CONVERSIONS)


def build_model(spec: ModelSpec, in_chans: int, num_classes: int, image_size: int = 28,
                spatial_dims: int = 2) -> Classifier:
    """Create a fresh classifier for a dataset with ``in_chans`` channels, ``num_classes`` outputs and images
    ``image_size`` pixels on a side (recipes that adapt to small inputs use it). With ``spatial_dims=3`` the
    recipe's 2D model is converted to take volumes (``spec.volume``: ACS, 2.5D or inflated 3D convolutions).

    Example:
        >>> model = build_model(ModelSpec("resnet18_28", "resnet18"), in_chans=1, num_classes=2)
        >>> model(torch.rand(4, 1, 28, 28)).shape
        torch.Size([4, 2])
    """
    if spec.recipe not in RECIPES:
        raise unknown_choice("model recipe", spec.recipe, RECIPES, "Set model.recipe to one of them.")
    backbone = RECIPES[spec.recipe](spec.arch, in_chans, num_classes, spec.pretrained, image_size=image_size)
    if spatial_dims == 3:
        if spec.recipe == "resize":
            raise ConfigError(
                f"model {spec.name!r} (recipe 'resize') upsamples inputs to {spec.input_size} px; a volume would "
                f"become {spec.input_size}^3 voxels. Volumes are used at their own size: choose a recipe that adapts "
                f"to small inputs (model=resnet18_28, resnet18_native, densenet121, ...).")
        backbone = to_volumes(backbone, spec.volume, spec.arch)
    elif spatial_dims != 2:
        raise ConfigError(f"spatial_dims={spatial_dims}: medbench's models take images (2) or volumes (3).")
    input_size = spec.input_size if spec.recipe == "resize" else None
    return Classifier(backbone, [spec.mean] * in_chans, [spec.std] * in_chans, input_size, spatial_dims)


@dataclass
class ModelCard:
    """The JSON written beside every checkpoint: what it is, how it was made, how good it is."""

    name: str
    arch: str
    recipe: str
    dataset: str
    size: int
    seed: int
    in_chans: int
    num_classes: int
    task: str
    input_size: int | None = None
    mean: float = 0.5
    std: float = 0.5
    metrics: dict[str, float] = field(default_factory=dict)
    train: dict[str, object] = field(default_factory=dict)
    sha256: str = ""
    created: str = ""
    medbench_version: str = ""
    spatial_dims: int = 2  # 3: a volume model (NCDHW), converted with ``volume``
    volume: str = "acs"

    def spec(self) -> ModelSpec:
        return ModelSpec(self.name, self.arch, self.recipe, False, self.input_size, self.mean, self.std, self.volume)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def card_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def save_checkpoint(model: Classifier, card: ModelCard, weights: str | Path) -> Path:
    """Write weights (safetensors) then the card, each atomically: the entry is visible once its card is."""
    weights = Path(weights)
    weights.parent.mkdir(parents=True, exist_ok=True)
    # retraining an entry: hide it (no card, no entry) until the new weights and their card are both in place
    card_path(weights).unlink(missing_ok=True)
    tmp = weights.with_name(weights.name + f".tmp{os.getpid()}")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # one metadata key only: safetensors writes metadata from a Rust hash map, whose order changes from call to
    # call, so two keys made identical weights hash differently (seen when a resumed training was compared)
    save_file(state, str(tmp), metadata={"format": "pt"})
    card.sha256 = sha256_file(tmp)
    os.replace(tmp, weights)
    tmp_card = card_path(weights).with_name(card_path(weights).name + f".tmp{os.getpid()}")
    tmp_card.write_text(json.dumps(asdict(card), indent=2, sort_keys=True) + "\n")
    os.replace(tmp_card, card_path(weights))
    return weights


def read_card(weights: str | Path) -> ModelCard:
    path = card_path(weights)
    if not path.exists():
        raise CheckpointError(f"no model card {str(path)!r} beside {str(weights)!r}; every checkpoint needs one.")
    data = json.loads(path.read_text())
    known = {f for f in ModelCard.__dataclass_fields__}
    return ModelCard(**{k: v for k, v in data.items() if k in known})


def load_checkpoint(weights: str | Path, in_chans: int | None = None, num_classes: int | None = None) -> tuple[Classifier, ModelCard]:
    """Load a safetensors checkpoint after checking its sha256 and that it fits the dataset."""
    weights = Path(weights)
    if weights.suffix != ".safetensors":
        raise CheckpointError(
            f"{str(weights)!r} is not a .safetensors file; medbench never unpickles checkpoints. "
            f"Convert it with safetensors.torch.save_file(state_dict, 'model.safetensors')."
        )
    if not weights.exists():
        raise CheckpointError(f"checkpoint {str(weights)!r} does not exist.")
    card = read_card(weights)
    actual = sha256_file(weights)
    if card.sha256 and actual != card.sha256:
        raise CheckpointError(
            f"sha256 of {str(weights)!r} is {actual} but its card says {card.sha256}; "
            f"the weights were changed or truncated. Retrain or restore the file."
        )
    if in_chans is not None and card.in_chans != in_chans:
        raise CheckpointError(
            f"checkpoint {weights.name} takes {card.in_chans} input channel(s) ({card.dataset}) but the "
            f"dataset has {in_chans}. Use a checkpoint trained on this dataset, or train one."
        )
    if num_classes is not None and card.num_classes != num_classes:
        raise CheckpointError(
            f"checkpoint {weights.name} has {card.num_classes} outputs ({card.dataset}) but the dataset "
            f"has {num_classes} classes. Use a checkpoint trained on this dataset, or train one."
        )
    model = build_model(card.spec(), card.in_chans, card.num_classes, int(card.size), int(card.spatial_dims))
    model.load_state_dict(load_file(str(weights)), strict=True)
    model.eval()
    return model, card
