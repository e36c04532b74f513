"""Run one experiment: dataset x model x attack (or battery); writes summary.json, a leaderboard row, a W&B run.

    python scripts/attack.py experiment=quickstart
    python scripts/attack.py experiment=quickstart dataset=pneumoniamnist
    python scripts/attack.py -m dataset=breastmnist attack=fgsm,pgd_linf
    python scripts/attack.py -m hydra/launcher=slurm dataset=breastmnist,pneumoniamnist attack=fgsm,pgd_linf  (SLURM/README.md)
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from bench.config import CONF_DIR  # (importing bench.config registers the workspace_root resolver)
from bench.errors import BenchError
from bench.experiment import run_experiment
from bench.sweep.status import job_status


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN and cfg.logger.get("wandb") is not None and not cfg.logger.wandb.get("group"):
        # runs of one sweep share a W&B group named after the sweep folder
        with open_dict(cfg):
            cfg.logger.wandb.group = "sweep-" + "-".join(Path(hydra_cfg.sweep.dir).parts[-2:])
    # the job's own record of how it ended (a sweep's summary reads it: scripts/sweep_status.py)
    with job_status(hydra_cfg.runtime.output_dir, hydra_cfg.overrides.task) as rows:
        try:
            rows.extend(run_experiment(cfg, hydra_cfg.runtime.output_dir))
        except BenchError as exc:
            raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
