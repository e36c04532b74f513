"""Glue between Hydra configs and bench objects (resolvers, dataclass conversion, hashing)."""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bench.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"

if not OmegaConf.has_resolver("repo_root"):
    OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT))


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


def config_hash(cfg: DictConfig | dict, drop: tuple[str, ...] = ("paths", "logger", "hydra")) -> str:
    """A short, stable hash of what determines a result (paths and loggers excluded)."""
    data = {k: v for k, v in to_dict(cfg).items() if k not in drop}
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
