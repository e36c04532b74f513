"""Every config in conf/ composes, and every option resolves into bench objects."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from bench.attacks import build_attack
from bench.config import CONF_DIR, parse_eps
from bench.data import dataset_info, is_3d
from bench.experiment import attack_specs, model_spec_from_cfg, train_config_from_cfg
from bench.models import RECIPES

GROUPS = ("dataset", "model", "attack", "battery", "logger", "paths", "experiment")
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]


def compose_with(*overrides: str):
    """Compose as ``scripts/attack.py`` would, with Hydra's runtime set so ${hydra:...} resolves."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_resolves(group, option):
    cfg = compose_with(f"{group}={option}")
    for key in cfg:  # every interpolation outside Hydra's own section resolves
        if key != "hydra":
            OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
    if not is_3d(cfg.dataset.flag):
        dataset_info(cfg.dataset.flag, cfg.dataset.size)
    assert model_spec_from_cfg(cfg).recipe in RECIPES
    train_config_from_cfg(cfg)
    for _, spec in attack_specs(cfg):
        build_attack(spec["name"], spec["norm"], 0, spec.get("params") or {})
        assert all(parse_eps(e) >= 0 for e in spec["epsilons"])


def test_train_config_composes():
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["dataset=pneumoniamnist"])
    assert cfg.dataset.flag == "pneumoniamnist" and cfg.train.epochs == 100


def test_quickstart_uses_the_quick_battery():
    cfg = compose_with("experiment=quickstart")
    assert [a for a, _ in attack_specs(cfg)] == ["fgsm", "pgd_linf", "foolbox_linf_pgd"]
    assert cfg.dataset.flag == "breastmnist"


def test_data_root_comes_from_environment(monkeypatch):
    monkeypatch.setenv("MEDMNIST_ROOT", "/some/where")
    cfg = compose_with()
    assert cfg.data.root == "/some/where"
