"""Transfer attacks: craft on an independently trained surrogate, evaluate on the target (black-box).

The surrogate is a model-zoo checkpoint of another seed and/or architecture,
trained on the same dataset if the zoo lacks it. The inner attack is our PGD
(``momentum`` > 0 gives MI-FGSM, Dong et al. 2018, which transfers better).
The target is never queried while crafting, so its propagation counts are zero.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from bench.attacks.base import Attack, AttackContext, attack_mode
from bench.attacks.gradient import PGD
from bench.attacks.registry import register_attack
from bench.errors import CheckpointError, ConfigError


def resolve_surrogate(context: AttackContext, name: str, seed: int, checkpoint: object = None):
    """The surrogate of a black-box attack: a checkpoint, or the zoo's ``name`` trained with ``seed``.

    The zoo trains it (once, under its lock) if missing, with the experiment's
    training settings but the surrogate's seed. Refuses a surrogate that cannot
    take the dataset's inputs, or that is the attacked model itself.
    """
    from bench.config import CONF_DIR
    from bench.experiment import model_spec_from_cfg
    from bench.models import load_checkpoint
    from bench.zoo import get_or_train

    info = context.dataset
    if checkpoint:
        model, card = load_checkpoint(Path(str(checkpoint)))
    else:
        spec_file = CONF_DIR / "model" / f"{name}.yaml"
        if not spec_file.exists():
            names = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
            raise ConfigError(f"unknown surrogate model {name!r}; choices: {', '.join(names)}.")
        spec = model_spec_from_cfg(OmegaConf.create({"model": OmegaConf.load(spec_file)}))
        train = type(context.train)(**{**vars(context.train), "seed": seed})
        model, card, _ = get_or_train(spec, info.flag, info.size, context.data_root, train, context.zoo_dir,
                                      info.n_channels, info.num_classes)
    # Cards and dataset infos from before volumes existed describe 2D images.
    card_dims, data_dims = getattr(card, "spatial_dims", 2), getattr(info, "spatial_dims", 2)
    takes = (card.in_chans, card.num_classes, card.size, card_dims)
    if takes != (info.n_channels, info.num_classes, info.size, data_dims):
        raise CheckpointError(
            f"surrogate {card.name} takes {_input_shape(card.in_chans, card.size, card_dims)} inputs with "
            f"{card.num_classes} classes, but the target's dataset {info.track} has "
            f"{_input_shape(info.n_channels, info.size, data_dims)} with {info.num_classes}. "
            f"Use a surrogate trained on {info.flag} at size {info.size}."
        )
    target = context.target_card
    if target is not None and (target.name, target.seed) == (card.name, card.seed) and target.sha256 == card.sha256:
        raise ConfigError("the surrogate is the target model itself; pick another seed or architecture for a black-box attack.")
    return model, card


def _input_shape(channels: int, size: int, spatial_dims: int) -> str:
    """'1x28x28' for images, '1x28x28x28' for volumes."""
    return "x".join(map(str, (channels, *[size] * spatial_dims)))


@register_attack("transfer")
class Transfer(Attack):
    kind = "transfer"
    norms = ("linf", "l2")

    @classmethod
    def param_names(cls):
        return ("surrogate", "surrogate_seed", "surrogate_checkpoint", "steps", "rel_stepsize", "momentum", "restarts")

    def __init__(self, norm="linf", seed=0, **params):
        super().__init__(norm, seed, **params)
        self.surrogate_name = str(params.get("surrogate", "resnet18_native"))
        self.surrogate_seed = int(params.get("surrogate_seed", 1))
        self.surrogate_checkpoint = params.get("surrogate_checkpoint")
        inner = {k: params[k] for k in ("steps", "rel_stepsize", "momentum", "restarts") if k in params}
        inner_goal = {k: params[k] for k in ("targeted", "target") if k in params}
        self.inner = PGD(norm, seed, random_start=True, **inner, **inner_goal)
        self.inner.keep_first_success = False
        self.surrogate: torch.nn.Module | None = None

    def prepare(self, context: AttackContext) -> None:
        model, self.surrogate_card = resolve_surrogate(context, self.surrogate_name, self.surrogate_seed,
                                                       self.surrogate_checkpoint)
        self.surrogate = model.to(context.device).eval()

    def run(self, model, x, criterion, eps):
        if self.surrogate is None:
            raise ConfigError("the transfer attack has no surrogate: call prepare() (the experiment runner does).")
        with attack_mode(self.surrogate):
            return self.inner.run(self.surrogate, x, criterion, eps)
