"""Where one standard-battery run spends its time, per attack: model passes, host work, synchronisation.

The speed targets of issue 16 are won or lost inside the battery, so the next
gain should be chosen from this split, not guessed. ``PassTimer`` wraps the
attacked model (inside its form): it times every forward and every input
gradient's backward through the model, and counts the samples each pass
carried. The battery runs exactly as ``scripts/attack.py`` runs it
(``bench.evaluate.attack_batch``, sequential, nested epsilons); its ``on_stage``
hook tells the timer which attack is running, so each attack's wall time splits
into

- forward: time inside the model's forward calls;
- backward: time from the start of a backward through the model's logits to its
  end at the input (the network's backward, nothing of the attack's loss);
- synchronisation (CUDA only): time the host waited for queued device work
  before a pass started; on the CPU nothing is queued, so it is zero;
- host: the rest (proposals, projections, bookkeeping, records, Python).

With CUDA every pass is synchronised before and after, so the device time lands
in the pass that queued it: the profile runs slightly slower than a plain run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

import torch
import torch.nn as nn

CLEAN_STAGE = "clean"  # the clean pass of each batch, before the first attack


@dataclass
class StageTime:
    """One attack's share of the run (seconds; samples carried by forward and backward passes)."""

    wall_s: float = 0.0
    forward_s: float = 0.0
    backward_s: float = 0.0
    sync_s: float = 0.0
    forward_samples: int = 0
    backward_samples: int = 0
    calls: int = 0  # model calls (forward passes of a batch)

    @property
    def host_s(self) -> float:
        return max(0.0, self.wall_s - self.forward_s - self.backward_s - self.sync_s)

    @property
    def mean_batch(self) -> float:
        return self.forward_samples / self.calls if self.calls else 0.0


class _Mark(torch.autograd.Function):
    """Identity whose backward tells the timer when the gradient reaches this point."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, timer: "PassTimer", where: str) -> torch.Tensor:  # type: ignore[override]
        ctx.timer, ctx.where, ctx.n = timer, where, len(t)
        return t.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        ctx.timer.backward_mark(ctx.where, grad, ctx.n)
        return grad, None, None


class PassTimer(nn.Module):
    """Wraps a model; times its passes per stage (the attack running), switched through ``stage``."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.stages: dict[str, StageTime] = {}
        self._stage = CLEAN_STAGE
        self._stage_started = time.perf_counter()
        self._backward_started: float | None = None

    def _sync(self, t: torch.Tensor) -> float:
        if not t.is_cuda:
            return 0.0
        started = time.perf_counter()
        torch.cuda.synchronize(t.device)
        return time.perf_counter() - started

    def current(self) -> StageTime:
        return self.stages.setdefault(self._stage, StageTime())

    def stage(self, name: str) -> None:
        """Close the running stage's wall time and start ``name`` (``attack_batch``'s on_stage hook)."""
        now = time.perf_counter()
        self.current().wall_s += now - self._stage_started
        self._stage, self._stage_started = name, now

    def finish(self) -> dict[str, StageTime]:
        self.stage(CLEAN_STAGE)
        return self.stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stage = self.current()
        stage.sync_s += self._sync(x)
        tracked = torch.is_grad_enabled() and x.requires_grad
        if tracked:
            x = _Mark.apply(x, self, "end")
        started = time.perf_counter()
        out = self.inner(x)
        self._sync(out)  # the device's forward belongs to the pass
        stage.forward_s += time.perf_counter() - started
        stage.forward_samples += len(x)
        stage.calls += 1
        return _Mark.apply(out, self, "start") if tracked else out

    def backward_mark(self, where: str, grad: torch.Tensor, n: int) -> None:
        stage = self.current()
        if where == "start":
            stage.sync_s += self._sync(grad)
            self._backward_started = time.perf_counter()
        elif self._backward_started is not None:
            self._sync(grad)  # the device's backward belongs to the pass
            stage.backward_s += time.perf_counter() - self._backward_started
            stage.backward_samples += n
            self._backward_started = None


def profile_table(stages: dict[str, StageTime], device_type: str) -> list[str]:
    """Markdown lines: one row per stage (attack), then the total."""
    total = StageTime(**{f.name: sum(getattr(s, f.name) for s in stages.values()) for f in fields(StageTime)})
    sync = (lambda s: f"{s.sync_s:.1f}") if device_type == "cuda" else (lambda s: "0 (CPU)")
    lines = ["| stage | wall s | share | forward s | backward s | host s | sync s | forward samples | "
             "backward samples | mean batch | sample-passes/s in the model |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in [*stages.items(), ("total", total)]:
        model_s = s.forward_s + s.backward_s
        rate = (s.forward_samples + s.backward_samples) / model_s if model_s else 0.0
        share = s.wall_s / total.wall_s if total.wall_s else 0.0
        label = f"**{name}**" if name == "total" else name
        lines.append(f"| {label} | {s.wall_s:.1f} | {share:.0%} | {s.forward_s:.1f} | {s.backward_s:.1f} | "
                     f"{s.host_s:.1f} | {sync(s)} | {s.forward_samples:,} | {s.backward_samples:,} | "
                     f"{s.mean_batch:.0f} | {rate:,.0f} |")
    return lines
