"""Training methods of trained defenses: each batch's loss, and which epoch's checkpoint is kept.

``train.defense`` names one of ``TRAINING_METHODS`` and ``train.defense_params``
holds its settings (the defense YAML's ``train:`` section). The trainer
(``bench/train.py``) asks the method for two things only:

- ``loss(model, x, y)``: the loss of one training batch (the model is in train
  mode on entry and must be on return);
- ``score(model, val)``: how good an epoch's model is on the validation split;
  the epoch with the best score is kept. Standard training keeps the best
  clean AUC (the MedMNIST recipe); adversarial training keeps the best
  *robust* accuracy, because robust accuracy overfits long before clean
  accuracy does (Rice et al. 2020); noise training keeps the best accuracy
  under noise of its own sigma.

Adversaries craft their examples with the model in eval mode and with no
parameter gradients: the attack's passes must not move BatchNorm's running
statistics, and only the input gradient is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.attacks.base import attack_mode
from bench.attacks.threat import project, random_start
from bench.config import parse_eps
from bench.data import Split
from bench.errors import ConfigError
from bench.registry import Registry
from bench.tasks import Task

REQUIRED = object()  # a PARAMS default meaning "must be given"

TRAINING_METHODS: Registry[type["TrainingMethod"]] = Registry(
    "training method", "Set train.defense to one of them (the defense YAML's train.method, conf/defense/)."
)


class TrainingMethod:
    """Standard training (``none``): the task loss on clean batches, the best validation AUC kept."""

    name: ClassVar[str] = "none"
    PARAMS: ClassVar[Mapping[str, object]] = {}  # parameter -> default (REQUIRED: no default)
    selection_metric: ClassVar[str] = "val_auc"  # the card metric holding the kept epoch's score

    def __init__(self, task: Task, params: Mapping[str, object] | None = None, seed: int = 0):
        params = dict(params or {})
        unknown = set(params) - set(self.PARAMS)
        if unknown:
            raise ConfigError(
                f"training method {self.name!r} got unknown parameter(s) {sorted(unknown)}; its parameters are: "
                f"{', '.join(sorted(self.PARAMS)) or 'none'}. Fix the defense YAML's train: section.")
        missing = [k for k, v in self.PARAMS.items() if v is REQUIRED and k not in params]
        if missing:
            raise ConfigError(
                f"training method {self.name!r} needs {', '.join(missing)} but the defense YAML's train: section "
                f"does not set it; add e.g. {missing[0]}: {EXAMPLES.get(missing[0], '...')}.")
        self.task = task
        self.params = {**self.PARAMS, **params}
        self.seed = seed
        # Its own generator, so the data order (drawn elsewhere) is the same with or without a defense.
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def propagations_per_step(self) -> int:
        """Batch-sized forward passes per optimiser step (each with a backward, but TRADES' clean target)."""
        return 1

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.task.loss(model(x), y)

    def score(self, model: nn.Module, val: Split, val_metrics: Mapping[str, float], device: str) -> float:
        """The number checkpoint selection maximises; ``val_metrics`` is the clean evaluation just done."""
        return val_metrics["auc"]

    def noise(self, shape: torch.Size, device: torch.device | str, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal noise drawn on the CPU from the method's generator (reproducible on any device)."""
        return torch.randn(shape, generator=generator or self.generator).to(device)


EXAMPLES = {"eps": "4/255", "sigma": 0.25, "steps": 7}


def register_training(cls: type[TrainingMethod]) -> type[TrainingMethod]:
    TRAINING_METHODS.add(cls.name, cls)
    return cls


register_training(TrainingMethod)


def training_method(name: str, task: Task, params: Mapping[str, object] | None = None, seed: int = 0) -> TrainingMethod:
    """The registered method ``name`` with its parameters checked (ConfigError naming the fix otherwise)."""
    return TRAINING_METHODS[name](task, params, seed)


def pgd_linf(model: nn.Module, x: torch.Tensor, objective: Callable[[torch.Tensor], torch.Tensor],
             eps: float, steps: int, step_size: float, start: torch.Tensor) -> torch.Tensor:
    """L-inf PGD ascending ``objective(logits)`` (a scalar) from ``x + start``; call it inside ``attack_mode``.

    Only the input gradient is taken (``torch.autograd.grad``), so no parameter
    gradient is ever computed while crafting.
    """
    x_adv = (x + start).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(model(x_adv)), x_adv)
        x_adv = (x + project(x_adv.detach() + step_size * grad.sign() - x, eps, "linf")).clamp(0, 1)
    return x_adv.detach()


def kl_divergence(task: Task, clean_logits: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(p_clean || p_adv): over the softmax, or summed per-label Bernoulli KLs for multi-label."""
    if task.multi_label:
        p = torch.sigmoid(clean_logits)
        per_label = (p * (F.logsigmoid(clean_logits) - F.logsigmoid(adv_logits))
                     + (1 - p) * (F.logsigmoid(-clean_logits) - F.logsigmoid(-adv_logits)))
        return per_label.sum(1)
    return F.kl_div(F.log_softmax(adv_logits, 1), F.log_softmax(clean_logits, 1), reduction="none", log_target=True).sum(1)


@torch.no_grad()
def accuracy(model: nn.Module, task: Task, images: torch.Tensor, labels: torch.Tensor, device: str,
             perturb: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], batch_size: int = 256) -> float:
    """Class-balanced accuracy of ``model`` (eval mode) on ``perturb(x, y)`` over a whole split, batch by batch.

    Single-label tasks average the per-class accuracies (balanced accuracy), so a model that predicts the
    majority class for everything, which no perturbation can flip, scores chance and is never selected
    (on BreastMNIST plain robust accuracy would keep such an epoch: 73% of the val split is one class).
    Multi-label tasks use the per-label accuracy over all labels.
    """
    model.eval()
    correct, targets = [], []
    for i in range(0, len(images), batch_size):
        x, y = images[i : i + batch_size].to(device), labels[i : i + batch_size].to(device)
        with torch.enable_grad():
            x = perturb(x, y)
        correct.append(task.correct(model(x), y).float().cpu())
        targets.append(y.cpu())
    if not correct:
        return 0.0
    hits, y_all = torch.cat(correct), torch.cat(targets)
    if task.multi_label:
        return float(hits.mean())
    return float(torch.stack([hits[y_all == c].mean() for c in torch.unique(y_all)]).mean())


class _Adversarial(TrainingMethod):
    """What PGD-AT and TRADES share: an L-inf budget, a step count, and selection by robust balanced val accuracy."""

    PARAMS: ClassVar[Mapping[str, object]] = {"eps": REQUIRED, "steps": 7, "rel_stepsize": None, "val_steps": 10}
    selection_metric = "robust_val_bacc"

    def __init__(self, task, params=None, seed=0):
        super().__init__(task, params, seed)
        self.eps = parse_eps(self.params["eps"])
        if not 0 < self.eps <= 1:
            raise ConfigError(f"training method {self.name!r}: eps={self.params['eps']!r} must be in (0, 1] "
                              "(images are in [0, 1]); write it as '4/255'.")
        for key in ("steps", "val_steps"):
            if int(self.params[key]) < 1:
                raise ConfigError(f"training method {self.name!r}: {key}={self.params[key]!r} must be a positive "
                                  f"integer; set {key}: 7 (or more) in the defense YAML's train: section.")
        self.steps, self.val_steps = int(self.params["steps"]), int(self.params["val_steps"])
        # Madry et al.'s ratio (2.5 eps spread over the steps) unless a relative step size is given.
        rel = self.params["rel_stepsize"]
        self.step_size = (2.5 / self.steps if rel is None else float(rel)) * self.eps
        if self.step_size <= 0:
            raise ConfigError(f"training method {self.name!r}: rel_stepsize={rel!r} must be positive.")

    def score(self, model, val, val_metrics, device):
        """Balanced accuracy under our PGD (``val_steps`` steps, step 2.5 eps/steps, fixed seed) at the training eps."""
        from bench.attacks import build_attack  # the evaluation's own PGD, so selection uses what evaluation uses

        attack = build_attack("pgd", "linf", seed=self.seed,
                              params={"steps": self.val_steps, "rel_stepsize": 2.5 / self.val_steps})

        def perturb(x, y):
            return attack(model, x, y, [self.eps], self.task)[0].x_adv

        return accuracy(model, self.task, val.images, self.task.labels_as_targets(val.labels), device, perturb)


@register_training
class PGDAdversarialTraining(_Adversarial):
    """Madry et al. 2018: minimise the task loss on L-inf PGD examples (random start) crafted per batch."""

    name = "pgd_at"

    @property
    def propagations_per_step(self) -> int:
        return self.steps + 1

    def loss(self, model, x, y):
        start = random_start(x, self.eps, "linf", self.generator)
        with attack_mode(model):  # eval mode, no parameter gradients; train mode restored after
            x_adv = pgd_linf(model, x, lambda logits: self.task.loss(logits, y, "sum"),
                             self.eps, self.steps, self.step_size, start)
        return self.task.loss(model(x_adv), y)


@register_training
class TRADES(_Adversarial):
    """Zhang et al. 2019: task loss on clean inputs + beta * KL(clean || adversarial), the adversary maximising the KL."""

    name = "trades"
    PARAMS = {**_Adversarial.PARAMS, "beta": 6.0}

    def __init__(self, task, params=None, seed=0):
        super().__init__(task, params, seed)
        self.beta = float(self.params["beta"])
        if self.beta < 0:
            raise ConfigError(f"training method 'trades': beta={self.params['beta']!r} must be >= 0 (the paper uses 6).")

    @property
    def propagations_per_step(self) -> int:
        return self.steps + 3  # clean target (forward only), the steps, then clean and adversarial forwards

    def loss(self, model, x, y):
        start = 0.001 * self.noise(x.shape, x.device)
        with attack_mode(model):
            with torch.no_grad():
                target = model(x)
            x_adv = pgd_linf(model, x, lambda logits: kl_divergence(self.task, target, logits).sum(),
                             self.eps, self.steps, self.step_size, start)
        clean = model(x)
        robust = kl_divergence(self.task, clean, model(x_adv)).mean()  # KL 'batchmean'
        return self.task.loss(clean, y) + self.beta * robust


@register_training
class GaussianNoise(TrainingMethod):
    """Cohen et al. 2019's base classifier: the task loss on x + sigma * N(0, I), not clamped (as in the paper)."""

    name = "gaussian_noise"
    PARAMS = {"sigma": REQUIRED}
    selection_metric = "noisy_val_bacc"

    def __init__(self, task, params=None, seed=0):
        super().__init__(task, params, seed)
        self.sigma = float(self.params["sigma"])
        if not self.sigma > 0:
            raise ConfigError(f"training method 'gaussian_noise': sigma={self.params['sigma']!r} must be > 0; "
                              "set defense.params.sigma (e.g. 0.12 or 0.25).")

    def loss(self, model, x, y):
        return self.task.loss(model(x + self.sigma * self.noise(x.shape, x.device)), y)

    def score(self, model, val, val_metrics, device):
        """Balanced accuracy on one noise draw of the same sigma, the same draw every epoch (fixed seed)."""
        generator = torch.Generator().manual_seed(self.seed)
        return accuracy(model, self.task, val.images, self.task.labels_as_targets(val.labels), device,
                        lambda x, y: x + self.sigma * self.noise(x.shape, x.device, generator))
