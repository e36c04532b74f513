"""Rebuild examples/submission/: train its weights and write its submission.yaml (about 4 minutes on 2 CPU cores).

    python scripts/make_example_submission.py
    python scripts/make_example_submission.py --out /tmp/my_example --epochs 30

The example is a JPEG-compression defense (Guo et al. 2018) in front of timm's tiny
``test_resnet`` (372k parameters, recipe ``native``) trained normally on BreastMNIST
(seed 0, ``bench.train.train_classifier``: Adam, the best validation AUC kept). Its
``reported`` accuracies are what a *non-adaptive* evaluation of the defense gives:
APGD-CE (100 steps) differentiating through the JPEG as autograd sees it (a zero
gradient). That is how JPEG was once reported robust; the benchmark's BPDA and
transfer attacks show what the defense is worth, and the row shows both numbers.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch

from bench.config import REPO_ROOT

ARCH, RECIPE, DATASET, SIZE, SEED = "test_resnet", "native", "breastmnist", 28, 0
QUALITY = 75
EPSILONS = ("1/255", "2/255", "4/255", "8/255")

TEMPLATE = """\
# An example submission: python scripts/submit.py submission=examples/submission
# Written by scripts/make_example_submission.py; every field is explained in results/SUBMITTING.md.
name: JPEG test-ResNet (example)
authors: [medbench maintainers]
paper: https://arxiv.org/abs/1711.00117   # Guo et al. 2018, "Countering adversarial images using input transformations"
track:
  dataset: {dataset}
  size: {size}
  norm: linf
model:                       # a timm architecture and a registered recipe: no code of ours is imported
  arch: {arch}
  recipe: {recipe}
weights: model.safetensors
defense:
  name: jpeg
  params:
    quality: {quality}
  declaration:               # must agree with the registered jpeg defense (bench/defenses/input_transforms.py)
    randomised: false
    differentiable: false    # JPEG has no useful gradient: it is attacked through BPDA
training:
  method: standard
  summary: >-
    Standard training of the undefended classifier (the JPEG is applied at inference only):
    Adam lr 0.001, batch 128, lr x0.1 at 50% and 75% of the epochs, checkpoint with the best validation
    AUC kept (epoch {best_epoch}); clean test ACC {test_acc:.3f} without the JPEG.
  budget: {n_train} BreastMNIST training images x {epochs} epochs, seed {seed}, {minutes:.0f} min on {threads} CPU thread(s)
  seed: {seed}
# What a non-adaptive evaluation reports: APGD-CE (100 steps) through the JPEG as autograd sees it (zero gradient),
# full test split. The benchmark's row puts its own number beside these.
reported:
{reported}
"""


def naive_robust_accuracy(defended: torch.nn.Module, data_root: str | None) -> dict[str, float]:
    """APGD-CE on the defense's plain view (no BPDA) over the whole test split: the non-adaptive number."""
    from bench.attacks import build_attack
    from bench.config import parse_eps
    from bench.data import load_split

    test = load_split(DATASET, "test", SIZE, data_root)
    task = test.info.task
    attack = build_attack("apgd", "linf", SEED, {"steps": 100, "loss": "ce"})
    outputs = attack(defended, test.images, test.labels, [parse_eps(e) for e in EPSILONS], task)
    with torch.no_grad():
        return {label: float(task.correct(defended(out.x_adv), test.labels).float().mean())
                for label, out in zip(EPSILONS, outputs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "examples" / "submission")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--data-root", default=None, help="MedMNIST folder (default: $MEDMNIST_ROOT)")
    args = parser.parse_args()

    from bench.defenses import DefenseSpec, build_defense
    from bench.models import ModelSpec
    from bench.train import TrainConfig, train_classifier

    torch.manual_seed(SEED)
    spec = ModelSpec("jpeg_test_resnet_example", ARCH, RECIPE)
    train = TrainConfig(epochs=args.epochs, seed=SEED)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.safetensors"
        model, card = train_classifier(spec, DATASET, SIZE, args.data_root, train, weights,
                                       command="python scripts/make_example_submission.py")
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights, args.out / "model.safetensors")  # the weights only: a submission has no card
    defended = build_defense(DefenseSpec("jpeg", {"quality": QUALITY}), model.eval())
    reported = naive_robust_accuracy(defended, args.data_root)
    text = TEMPLATE.format(
        dataset=DATASET, size=SIZE, arch=ARCH, recipe=RECIPE, quality=QUALITY, best_epoch=card.metrics["best_epoch"],
        test_acc=card.metrics["test_acc"], n_train=_train_size(), epochs=args.epochs, seed=SEED,
        minutes=float(card.train["seconds"]) / 60, threads=torch.get_num_threads(),
        reported="\n".join(f'  "{label}": {acc:.4f}' for label, acc in reported.items()))
    (args.out / "submission.yaml").write_text(text)
    print(f"wrote {args.out / 'submission.yaml'} and {args.out / 'model.safetensors'}; reported (non-adaptive): "
          + ", ".join(f"{k} {v:.3f}" for k, v in reported.items()))


def _train_size() -> int:
    from bench.data import dataset_info

    return int(dataset_info(DATASET, SIZE).n_samples["train"])


if __name__ == "__main__":
    main()
