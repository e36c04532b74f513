"""Glue between Hydra configs and bench objects (resolvers, dataclass conversion, hashing)."""

from __future__ import annotations

import hashlib
import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bench.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = PACKAGE_DIR / "conf"  # shipped inside the package; the repo's top-level conf/ links here
REPO_ROOT = PACKAGE_DIR.parent   # the source checkout when running from one (site-packages when installed)


def is_source_checkout() -> bool:
    """True when bench is imported from its git checkout (editable install or PYTHONPATH), not from a wheel."""
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "conf").exists()


def workspace_root() -> Path:
    """Where the zoo (models/), outputs/ and results/ live.

    $MEDBENCH_HOME when set; the checkout when running from one (so the repo's committed results/ are the
    tracked leaderboard); otherwise the current directory. An installed medbench never writes into
    site-packages.
    """
    env = os.environ.get("MEDBENCH_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return REPO_ROOT if is_source_checkout() else Path.cwd().resolve()


if not OmegaConf.has_resolver("workspace_root"):
    OmegaConf.register_new_resolver("workspace_root", lambda: str(workspace_root()))


def parse_eps(value: Any) -> float:
    """Accept 0.03, "8/255" or "0.03"; return a float (the config keeps the readable form)."""
    try:
        eps = float(Fraction(str(value).replace(" ", "")))
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"epsilon {value!r} is not a number; write it as 0.031 or '8/255'.") from None
    return eps


def to_dict(cfg: DictConfig | dict) -> dict:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


# Parts of a config that do not change a result: where files go, how runs are logged and split up,
# which machine-local path a checkpoint or the data came from (files are checked by hash instead),
# and the training recipe (the attacked weights are identified by their sha256).
NOT_RESULT_KEYS = ("paths", "logger", "hydra", "data", "records", "tag", "checkpoint", "train", "checks")
NOT_RESULT_EVAL_KEYS = ("num_shards", "shard", "model_form")  # a form is numerics-checked against eager


def result_config(cfg: DictConfig | dict) -> dict:
    """The part of a resolved config that determines an evaluation's numbers (given the weights)."""
    data = {k: v for k, v in to_dict(cfg).items() if k not in NOT_RESULT_KEYS}
    if isinstance(data.get("eval"), dict):
        data["eval"] = {k: v for k, v in data["eval"].items() if k not in NOT_RESULT_EVAL_KEYS}
    if data.get("battery") and data["battery"].get("attacks"):
        data.pop("attack", None)  # a battery replaces the single attack
    if isinstance(data.get("defense"), dict) and data["defense"].get("name", "none") == "none":
        data.pop("defense")  # undefended runs keep the hashes (and record folders) they had before defenses
    elif isinstance(data.get("defense"), dict):
        data["defense"] = {k: v for k, v in data["defense"].items() if k != "train"}  # training is in the weights
    return data


def config_hash(cfg: DictConfig | dict) -> str:
    """A short, stable hash of what determines a result (see ``result_config``)."""
    blob = json.dumps(result_config(cfg), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def compose(overrides: list[str], config_name: str = "config") -> DictConfig:
    """Compose ``conf/`` as the scripts do, outside or inside a running Hydra app (which already owns conf/)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name=config_name, overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)
