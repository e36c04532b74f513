"""The hardware limit: how fast the model itself runs, in each form we know how to make it faster.

A k-step PGD needs k forward+backward passes per image, so no attack can beat
(forward+backward images per second) / k without skipping work. These rates
are measured on full batches only (a compiled model would otherwise recompile
for the last, smaller batch), with parameter gradients off as during attacks.

The forms are the engine's (``bench/model_forms.py``): the same objects serve
the rate measurement and the numerics check (our PGD run against each form).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.benchmark.measure import sync
from bench.model_forms import FORMS

# Forms measured when --forms is not given: bf16 autocast is the GPU's fast path and slow on most CPUs.
DEFAULT_FORMS = {"cpu": ("torch_eager", "torch_channels_last", "torch_bn_folded", "torch_compile"),
                 "cuda": ("torch_eager", "torch_channels_last", "torch_bn_folded", "torch_compile",
                          "torch_compile_channels_last", "torch_bf16")}


def full_batches(n: int, batch_size: int) -> int:
    """Images measured by the limit rows: the whole batches that fit in ``n`` (at least one batch of ``n``)."""
    return batch_size * (n // batch_size) if n >= batch_size else n


def forward_pass(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits of every image, batch by batch, without autograd."""
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def forward_backward_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Input gradients of the summed cross-entropy, batch by batch: one PGD step's propagations."""
    grads = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].detach().requires_grad_(True)
        loss = F.cross_entropy(model(xb), y[i : i + batch_size], reduction="sum")
        (grad,) = torch.autograd.grad(loss, xb)
        grads.append(grad)
    return torch.cat(grads)


@dataclass
class PreparedForm:
    """A built form and what building and warming it up cost (compilation, for torch_compile)."""

    name: str
    module: nn.Module
    warmup_s: float


def prepare_form(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device) -> PreparedForm:
    """Build a form and run one forward and one forward+backward batch (compiles both graphs once)."""
    started = time.perf_counter()
    module = FORMS[name](model, device)
    xb, yb = x[:batch_size], y[:batch_size]
    forward_pass(module, xb, batch_size)
    forward_backward_pass(module, xb, yb, batch_size)
    sync(device)
    return PreparedForm(name, module, time.perf_counter() - started)
