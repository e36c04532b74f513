"""The arithmetic a training step runs in (``train.precision``).

``fp32`` is the default and what every model trained before this setting used. ``bf16`` runs each training step's
forward pass under ``torch.autocast`` with bfloat16 (mixed precision: matrix products and convolutions in bf16,
reductions, the loss and every weight kept in float32, so the saved checkpoint is float32 as always). bfloat16 has
float32's exponent range, so unlike float16 it needs no loss scaling. On a CPU with AMX or AVX-512 BF16 a ResNet
(28), DenseNet or ViT training step takes a third to two thirds of the time, but depthwise-convolution models
(EfficientNet, MobileNetV3, ConvNeXt) take longer (``scripts/bench_train_precision.py``,
``results/perf/train_precision.md``); on GPUs it is the usual mixed-precision training.

Only training changes: validation, the kept epoch's test metrics, attacks and every evaluation run in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from bench.registry import Registry

StepContext = Callable[[str], AbstractContextManager]


def _float32(device: str) -> AbstractContextManager:
    return nullcontext()


def _bfloat16(device: str) -> AbstractContextManager:
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


PRECISIONS: Registry[StepContext] = Registry(
    "train.precision", "Set train.precision=fp32 (full precision, the default) or bf16 (bfloat16 mixed precision for "
    "the training steps; evaluation stays float32).")
PRECISIONS.add("fp32", _float32)  # the default: every model trained before this setting existed
PRECISIONS.add("bf16", _bfloat16)


def training_precision(name: str) -> StepContext:
    """The context a training step's forward pass and loss run in, for ``train.precision=<name>``."""
    return PRECISIONS[name]
