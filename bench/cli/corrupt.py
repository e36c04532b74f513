"""The corruption track (MedMNIST-C): balanced error of a model, with its defense, under common corruptions.

    python scripts/corrupt.py dataset=pneumoniamnist model=resnet18_native train.epochs=10
    python scripts/corrupt.py dataset=breastmnist model=resnet18_native train.epochs=30 defense=pgd_at
    python scripts/corrupt.py ... corruption.names=[pixelate,gaussian_noise] dataset.n_examples=64   # a smoke run

Every corruption of the dataset's MedMNIST-C list at its five severities, applied as documented in
bench/corruptions/catalog.py; writes summary.json in the run folder and the rows (per severity, per corruption,
and the mean) to ${paths.leaderboard_dir}/<flag>_<size>_corruptions.csv. Rerunning a killed command resumes.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bench.config import CONF_DIR  # (importing bench.config registers the workspace_root resolver)
from bench.errors import BenchError


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="corrupt")
def main(cfg: DictConfig) -> None:
    from bench.corruptions.track import run_corruption_track

    try:
        run_corruption_track(cfg, HydraConfig.get().runtime.output_dir)
    except BenchError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
