"""Certify a randomised-smoothing classifier (Cohen et al. 2019): certified L2 accuracy at radii 0, 0.1, 0.25, 0.5.

    python scripts/certify.py defense.params.sigma=0.25 checkpoint=models/breastmnist_28/....safetensors
    python scripts/certify.py dataset=pneumoniamnist model=resnet18_native certify.n=10000

Writes summary.json and certificates.csv (one line per sample) in the run folder and one row per radius
to ${paths.leaderboard_dir}/<flag>_<size>_certified_l2.csv; the n used is in every row.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bench.config import CONF_DIR  # (importing bench.config registers the workspace_root resolver)
from bench.defenses.certify import run_certification
from bench.errors import BenchError


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="certify")
def main(cfg: DictConfig) -> None:
    try:
        run_certification(cfg, HydraConfig.get().runtime.output_dir)
    except BenchError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
