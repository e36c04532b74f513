"""Training loop for scripts/train.py: the MedMNIST v2 baseline recipe, seeded.

Adam, lr x0.1 at 50% and 75% of the epochs, batch 128, the checkpoint with the
best validation AUC kept (as the MedMNIST baselines do), test metrics computed
with medmnist's own evaluator functions so they compare with the paper.

A trained defense (``cfg.defense``: PGD-AT, TRADES, Gaussian noise) changes two
things only, both looked up in ``bench.defenses.training.TRAINING_METHODS``:
each batch's loss, and the validation score that picks the kept epoch.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from medmnist.evaluator import getACC, getAUC

from bench import __version__
from bench.augment import get_augment
from bench.batch_norm import bn_statistics
from bench.data import Split, load_split
from bench.defenses.training import training_method
from bench.models import Classifier, ModelCard, ModelSpec, build_model, save_checkpoint
from bench.precision import training_precision
from bench.progress import progress
from bench.train_state import Progress, load_state, remove_state, save_state, state_paths


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (the config's ``train`` section)."""

    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    seed: int = 0
    n_train: int | None = None  # a deterministic subset, for smoke runs
    augment: str = "none"  # see bench.augment.AUGMENTS
    device: str = "cpu"
    defense: str = "none"  # training method of a trained defense: none | pgd_at | trades | gaussian_noise
    defense_params: dict = field(default_factory=dict)  # its settings (eps, steps, beta, sigma ...)
    # The batch order and augmentation draws; None = ``seed``. Set apart from ``seed`` (which also draws the
    # initial weights) it trains models that differ only in data order (experiment=underspecification).
    data_order_seed: int | None = None
    # What the weights start from: scratch, timm-hub (model.pretrained=true) or file:<sha256[:16]> (a local file).
    init: str = "scratch"
    # The batch-norm statistics each validation (and the saved model) uses: ema (PyTorch's moving averages) or
    # precise (recomputed over the training split; bench/batch_norm.py).
    bn_stats: str = "ema"
    # The arithmetic of each training step: fp32, or bf16 mixed precision (bench/precision.py). Evaluation is float32.
    precision: str = "fp32"


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256, device: str = "cpu") -> torch.Tensor:
    """Logits for every image, in eval mode, batch by batch."""
    model.eval()
    out = [model(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def evaluate_split(model: torch.nn.Module, split: Split, device: str = "cpu") -> dict[str, float]:
    """ACC and AUC exactly as medmnist's Evaluator computes them for the task type."""
    logits = predict_logits(model, split.images, device=device)
    scores = split.info.task.scores(logits).numpy()
    labels = split.labels.numpy()
    task = split.info.task_type
    return {"acc": float(getACC(labels, scores, task)), "auc": float(getAUC(labels, scores, task))}


def selection_key(score: float, auc: float) -> tuple[float, float]:
    """Order epochs by score, then clean AUC; an undefined value (NaN) ranks last.

    A validation split can lack a class (tiny or synthetic splits), which
    leaves AUC undefined; NaN compares False with everything, so without this
    no epoch would ever count as the best.
    """
    return tuple(float("-inf") if math.isnan(value) else float(value) for value in (score, auc))  # type: ignore[return-value]


def train_classifier(
    spec: ModelSpec,
    flag: str,
    size: int,
    root: str | Path | None,
    cfg: TrainConfig,
    out_path: str | Path,
    command: str = "",
) -> tuple[Classifier, ModelCard]:
    """Train ``spec`` on ``flag`` from scratch, save the best checkpoint and its card.

    "Best" is the training method's validation score: clean AUC for standard
    training, robust or noisy accuracy for a trained defense (ties go to the
    better clean AUC).
    """
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    train = load_split(flag, "train", size, root, n_examples=cfg.n_train, seed=cfg.seed)
    val = load_split(flag, "val", size, root)
    test = load_split(flag, "test", size, root)
    info = train.info
    task = info.task
    method = training_method(cfg.defense, task, cfg.defense_params, cfg.seed)  # fails before any work if misconfigured
    settle_bn_statistics = bn_statistics(cfg.bn_stats)
    step_precision = training_precision(cfg.precision)
    selects_by_auc = method.selection_metric == "val_auc"
    model = build_model(spec, info.n_channels, info.num_classes, info.size, info.spatial_dims).to(cfg.device)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    milestones = sorted({max(1, int(round(m * cfg.epochs))) for m in cfg.milestones})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones=milestones, gamma=cfg.gamma)
    generator = torch.Generator().manual_seed(cfg.seed if cfg.data_order_seed is None else int(cfg.data_order_seed))
    targets = task.labels_as_targets(train.labels)
    augment = get_augment(cfg.augment)

    # a killed run continues from its last finished epoch, exactly as if it had not stopped (bench/train_state.py)
    from bench.zoo import training_settings  # bench.zoo imports this module

    fingerprint = {"spec": asdict(spec), "flag": flag, "size": size, "seed": cfg.seed, "train": training_settings(cfg)}
    generators = {"order": generator, "method": method.generator}
    state = load_state(out_path, fingerprint, model, optimiser, scheduler, generators)
    if state is not None:
        print(f"resuming training after epoch {state.epoch}/{cfg.epochs} from {state_paths(out_path)[1].parent}",
              flush=True)
    state = state or Progress()
    best_key, best_state, best_epoch, history = state.best_key, state.best_state, state.best_epoch, state.history
    started = time.time() - state.seconds
    bar = progress(range(state.epoch + 1, cfg.epochs + 1), desc=f"train {spec.name} on {info.track}", unit="epoch")
    for epoch in bar:
        model.train()
        order = torch.randperm(len(train), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            x, y = augment(train.images[idx], generator).to(cfg.device), targets[idx].to(cfg.device)
            with step_precision(cfg.device):
                loss = method.loss(model, x, y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        scheduler.step()
        settle_bn_statistics(model, train.images, cfg.batch_size, cfg.device)
        val_metrics = evaluate_split(model, val, cfg.device)
        score = method.score(model, val, val_metrics, cfg.device)
        key = selection_key(score, val_metrics["auc"])
        if best_key is None or key > best_key:
            best_key, best_epoch = key, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append({"epoch": epoch, "loss": total / count, "val_auc": val_metrics["auc"], "val_acc": val_metrics["acc"],
                        **({} if selects_by_auc else {method.selection_metric: score})})
        shown = "" if selects_by_auc else f"{method.selection_metric} {score:.4f}  "
        line = (
            f"epoch {epoch:3d}/{cfg.epochs}  loss {total / count:.4f}  val_auc {val_metrics['auc']:.4f}  "
            f"val_acc {val_metrics['acc']:.4f}  {shown}best {best_key[0]:.4f}@{best_epoch}  {time.time() - started:.0f}s"
        )
        bar.write(line)
        save_state(out_path, fingerprint, model, optimiser, scheduler, generators,
                   Progress(epoch, best_key, best_epoch, best_state, history, time.time() - started))

    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    val_metrics = evaluate_split(model, val, cfg.device)
    test_metrics = evaluate_split(model, test, cfg.device)
    seconds = time.time() - started
    card = ModelCard(
        name=spec.name,
        arch=spec.arch,
        recipe=spec.recipe,
        dataset=flag,
        size=size,
        seed=cfg.seed,
        in_chans=info.n_channels,
        num_classes=info.num_classes,
        task=info.task_type,
        input_size=spec.input_size if spec.recipe == "resize" else None,
        mean=spec.mean,
        std=spec.std,
        spatial_dims=info.spatial_dims,
        volume=spec.volume,
        metrics={
            "val_acc": val_metrics["acc"],
            "val_auc": val_metrics["auc"],
            "test_acc": test_metrics["acc"],
            "test_auc": test_metrics["auc"],
            "best_epoch": best_epoch,
            **({} if selects_by_auc else {method.selection_metric: best_key[0]}),
        },
        train={**asdict(cfg), "milestones": list(cfg.milestones), "seconds": round(seconds, 1), "command": command,
               "propagations_per_step": method.propagations_per_step, "selected_by": method.selection_metric,
               # the bits depend on these too: CPU kernels split their sums by thread (same threads, same sha256),
               # and pick their code by the CPU's vector instructions (AVX2 and AVX-512 machines differ)
               "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
               "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "history": history},
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        medbench_version=__version__,
    )
    save_checkpoint(model.cpu(), card, out_path)
    remove_state(out_path)
    print(
        f"saved {out_path}  test_acc {test_metrics['acc']:.4f}  test_auc {test_metrics['auc']:.4f}  "
        f"best epoch {best_epoch}  {seconds:.0f}s",
        flush=True,
    )
    return model, card
