"""Which batch-norm statistics a trained model evaluates with (``train.bn_stats``).

PyTorch keeps an exponential moving average of each batch norm's batch statistics (momentum 0.1). While the weights
still move fast the average lags them, and a checkpoint chosen early by validation AUC can carry statistics of
weights it no longer has: in eval mode its activations are mis-normalised and its predictions collapse. Measured
here on AdrenalMNIST3D (ResNet-18 native + ACS, 10 steps per epoch): the checkpoint of epoch 5 predicted the
majority class for every validation volume (ACC 0.776, the class prior; logit sd 0.10), and the same weights with
recomputed statistics had ACC 0.857, AUC 0.844 (logit sd 1.67). "Precise BN" (Wu and Johnson 2021, "Rethinking
'Batch' in BatchNorm", sec. 3) recomputes them over the training split before each validation, so the epoch
chosen is judged with the statistics its own weights produce.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bench.registry import Registry


def _keep_moving_average(model: nn.Module, images: torch.Tensor, batch_size: int, device: str) -> None:
    """PyTorch's default: the statistics the optimisation steps left behind."""


@torch.no_grad()
def recompute_statistics(model: nn.Module, images: torch.Tensor, batch_size: int, device: str = "cpu") -> None:
    """Set every batch norm's running mean and variance to their values over ``images`` (unaugmented, in order).

    Each batch norm normalises with its batch's statistics, as in training, while its input's per-channel sum and
    sum of squares are accumulated in float64 over every sample and position; the running variance is the
    unbiased one, as PyTorch keeps it. The other modules stay in eval mode (no dropout), and the batch counters
    are left as they were."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    sums: dict[nn.Module, list] = {m: [0.0, 0.0, 0] for m in norms}

    def accumulate(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach().to(torch.float64)
        dims = [d for d in range(x.dim()) if d != 1]
        acc = sums[module]
        acc[0] = acc[0] + x.sum(dims)
        acc[1] = acc[1] + (x * x).sum(dims)
        acc[2] += x.numel() // x.shape[1]

    modes = {m: m.training for m in model.modules()}
    counters = {m: m.num_batches_tracked.clone() for m in norms if m.num_batches_tracked is not None}
    hooks = [m.register_forward_pre_hook(accumulate) for m in norms]
    try:
        model.eval()
        for m in norms:
            m.train()
        for start in range(0, len(images), batch_size):
            model(images[start : start + batch_size].to(device))
    finally:
        for hook in hooks:
            hook.remove()
        for m, training in modes.items():
            m.train(training)
    for m in norms:
        total, squares, count = sums[m]
        mean = total / count
        var = (squares / count - mean * mean).clamp_min(0) * (count / max(count - 1, 1))
        m.running_mean.copy_(mean.to(m.running_mean.dtype))
        m.running_var.copy_(var.to(m.running_var.dtype))
        if m in counters:
            m.num_batches_tracked.copy_(counters[m])


BnStatistics = Callable[[nn.Module, torch.Tensor, int, str], None]
BN_STATISTICS: Registry[BnStatistics] = Registry(
    "train.bn_stats", "Set train.bn_stats=ema (PyTorch's moving averages) or precise (recomputed over the training "
    "split before each validation).")
BN_STATISTICS.add("ema", _keep_moving_average)  # the default: every model trained before this setting existed
BN_STATISTICS.add("precise", recompute_statistics)


def bn_statistics(name: str) -> BnStatistics:
    return BN_STATISTICS[name]
