"""Run one experiment: dataset x model x attack (or battery); writes summary.json, a leaderboard row, a W&B run.

    python scripts/attack.py experiment=quickstart
    python scripts/attack.py experiment=quickstart dataset=pneumoniamnist
    python scripts/attack.py -m dataset=breastmnist attack=fgsm,pgd_linf
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

import bench.config  # noqa: F401  (registers the repo_root resolver)
from bench.errors import BenchError
from bench.experiment import run_experiment


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN and cfg.logger.get("wandb") is not None and not cfg.logger.wandb.get("group"):
        # runs of one sweep share a W&B group named after the sweep folder
        with open_dict(cfg):
            cfg.logger.wandb.group = "sweep-" + "-".join(Path(hydra_cfg.sweep.dir).parts[-2:])
    try:
        run_experiment(cfg, hydra_cfg.runtime.output_dir)
    except BenchError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
