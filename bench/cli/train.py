"""Train one classifier into the model zoo.

    python scripts/train.py dataset=pneumoniamnist model=resnet18_28 train.epochs=100 seed=0
    python scripts/train.py dataset=breastmnist model=resnet18_native defense=pgd_at train.epochs=30   # PGD-AT
    python scripts/train.py ... reuse=true    # keep the zoo's entry if one was trained with these settings
"""

from __future__ import annotations

import shlex
import sys

import hydra
from omegaconf import DictConfig

from bench.config import CONF_DIR  # (importing bench.config registers the workspace_root resolver)
from bench.experiment import dataset_info_from_cfg, model_spec_from_cfg, train_config_from_cfg
from bench.train import train_classifier
from bench.zoo import find_trained, training_lock, zoo_path


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    info = dataset_info_from_cfg(cfg)
    spec = model_spec_from_cfg(cfg)
    train_cfg = train_config_from_cfg(cfg)
    out = zoo_path(cfg.paths.zoo_dir, info.flag, info.size, spec.name, train_cfg)
    command = "python scripts/train.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with training_lock(out):  # jobs of a sweep asking for the same entry train it once
        if cfg.get("reuse"):
            found, _ = find_trained(cfg.paths.zoo_dir, info.flag, info.size, spec.name, train_cfg)
            if found is not None:
                print(f"reuse=true: {found} was trained with these settings; not training again", flush=True)
                return
        train_classifier(spec, info.flag, info.size, cfg.data.root, train_cfg, out, command=command)

if __name__ == "__main__":
    main()
