"""The hardware limit: how fast the model itself runs, in each form we know how to make it faster.

A k-step PGD needs k forward+backward passes per image, so no attack can beat
(forward+backward images per second) / k without skipping work. These rates
are measured on full batches only (a compiled model would otherwise recompile
for the last, smaller batch), with parameter gradients off as during attacks.

Forms are a registry (name -> builder); each builder returns an ``nn.Module``
taking [0, 1] inputs and returning float32 logits, so the same object serves
the rate measurement and the numerics check (our PGD run against it).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.benchmark.measure import sync

FormBuilder = Callable[[nn.Module, torch.device], nn.Module]
FORMS: dict[str, FormBuilder] = {}
# Forms measured when --forms is not given: bf16 autocast is the GPU's fast path and slow on most CPUs.
DEFAULT_FORMS = {"cpu": ("torch_eager", "torch_channels_last", "torch_bn_folded", "torch_compile"),
                 "cuda": ("torch_eager", "torch_channels_last", "torch_bn_folded", "torch_compile", "torch_bf16")}


def register_form(name: str) -> Callable[[FormBuilder], FormBuilder]:
    """Add a model form: ``builder(model, device) -> module``. One entry adds a row to every limit measure."""

    def deco(fn: FormBuilder) -> FormBuilder:
        FORMS[name] = fn
        return fn

    return deco


def frozen_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A copy in eval mode without parameter gradients, so a form never changes the model attacked elsewhere."""
    clone = copy.deepcopy(model).to(device).eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


class _ChannelsLast(nn.Module):
    """Feeds the model NHWC-strided inputs (weights converted too), the layout oneDNN and cuDNN prefer."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last)).float()


class _Autocast(nn.Module):
    """Runs the model under bf16 autocast and hands back float32 logits (losses stay in float32)."""

    def __init__(self, model: nn.Module, device_type: str):
        super().__init__()
        self.model = model
        self.device_type = device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            out = self.model(x)
        return out.float()


@register_form("torch_eager")
def eager(model: nn.Module, device: torch.device) -> nn.Module:
    """The model as every attack gets it: float32, eager, NCHW."""
    return frozen_copy(model, device)


@register_form("torch_channels_last")
def channels_last(model: nn.Module, device: torch.device) -> nn.Module:
    return _ChannelsLast(frozen_copy(model, device))


@register_form("torch_bn_folded")
def bn_folded(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm folded into the preceding convolutions (eval mode only); rounding changes slightly."""
    from torch.fx.experimental.optimization import fuse

    clone = frozen_copy(model, device)
    target = getattr(clone, "backbone", clone)  # bench.models.Classifier: fold the backbone, keep the wrapper
    fused = fuse(target, inplace=False)
    for p in fused.parameters():
        p.requires_grad_(False)
    if target is clone:
        return fused
    clone.backbone = fused
    return clone


@register_form("torch_compile")
def compiled(model: nn.Module, device: torch.device) -> nn.Module:
    """torch.compile (inductor, default mode); compilation happens at the first call of each shape."""
    return torch.compile(frozen_copy(model, device))


@register_form("torch_bf16")
def bf16(model: nn.Module, device: torch.device) -> nn.Module:
    """bf16 autocast: the GPU's fast path; on CPUs without bf16 units it is usually slower."""
    return _Autocast(frozen_copy(model, device), device.type)


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
