"""Run one experiment: dataset x model x attack (or battery); writes summary.json, a leaderboard row, a W&B run.

    python scripts/attack.py experiment=quickstart
    python scripts/attack.py experiment=quickstart dataset=pneumoniamnist
    python scripts/attack.py -m dataset=breastmnist attack=fgsm,pgd_linf
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import bench.config  # noqa: F401  (registers the repo_root resolver)
from bench.errors import BenchError
from bench.experiment import run_experiment


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run_experiment(cfg, HydraConfig.get().runtime.output_dir)
    except BenchError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
