"""What the training benchmarks time: one training step, as ``bench.train`` runs it, on real batches.

Used by ``scripts/bench_train_precision.py`` (fp32 against bf16) and ``scripts/bench_train_memory_format.py``
(contiguous against channels_last): each times the variants it compares alternately, batch by batch, so a shared
CPU slows them alike.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import torch

from bench.benchmark.inputs import machine
from bench.config import REPO_ROOT
from bench.data import Split
from bench.papers.zoo import FAMILIES

MODELS = ("resnet18_28", "resnet50_28", *FAMILIES)  # the MedMNIST baselines' models, then the zoo's families


def benchmark_parser(doc: str, results_file: str) -> argparse.ArgumentParser:
    """The options every training benchmark takes; each script adds what it compares."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="breastmnist")
    p.add_argument("--root", default=None, help="data root (default: $MEDMNIST_ROOT)")
    p.add_argument("--models", nargs="+", default=list(MODELS), help="conf/model names (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--warmup", type=int, default=1, help="untimed batches of each variant first")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "perf" / results_file)
    return p


def full_batches(split: Split, batch_size: int, seed: int = 0) -> list[torch.Tensor]:
    """One epoch's full batches of ``split`` (indices), in a seeded order; a short last batch is dropped."""
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    return [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]


def timed_step(model: torch.nn.Module, optimiser: torch.optim.Optimizer, loss_fn: Callable, x: torch.Tensor,
               y: torch.Tensor, context: AbstractContextManager) -> float:
    """Seconds for one step: forward and loss under ``context``, backward, optimiser step."""
    started = time.perf_counter()
    with context:
        loss = loss_fn(model(x), y)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return time.perf_counter() - started


def machine_facts() -> dict[str, object]:
    """What a training-step timing depends on besides the model: the machine, its vector unit, its bf16 instructions."""
    return {"machine": machine("cpu"), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_bf16": cpu_bf16_flags()}


def cpu_bf16_flags() -> list[str]:
    """The bfloat16 instructions this CPU has (AMX tiles, AVX-512 BF16): what makes bf16 fast on a CPU."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return []
    return sorted(f for f in flags if f in ("amx_bf16", "amx_tile", "avx512_bf16"))
