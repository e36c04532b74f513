"""Timing and peak memory of one measure: median of repeats, memory measured afresh each time.

Why not ``resource.getrusage().ru_maxrss`` or tracemalloc: the first is the peak
of the whole process (it never goes down, so every measure after the biggest
one would report the same number), the second does not see torch's allocator.
On Linux the kernel lets a process reset its own peak RSS (``clear_refs`` = 5),
so each measure reads the peak RSS reached during *its own* repeats; where that
is refused, a thread samples the RSS every few milliseconds instead. On CUDA,
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
Either way the number is the peak *above* what was in use just before the
measure (model, data and earlier results are not counted).
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import torch

T = TypeVar("T")
_PAGE_KB = 4


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work, so a timer measures the work and not its launch."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _release_freed_memory() -> None:
    """Give freed heap pages back to the OS, so the baseline RSS is not inflated by earlier measures."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _RssSampler(threading.Thread):
    """Fallback peak-RSS probe: polls /proc/self/status (misses spikes shorter than the interval)."""

    def __init__(self, interval_s: float = 0.005):
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peak_kb = _status_kb("VmRSS") or 0
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, _status_kb("VmRSS") or 0)
            self._stop.wait(self.interval_s)

    def stop(self) -> int:
        self._stop.set()
        self.join()
        return max(self.peak_kb, _status_kb("VmRSS") or 0)


@dataclass
class PeakMemory:
    """Filled when the ``peak_memory`` block ends: MB above the level at its start (None if unmeasurable)."""

    mb: float | None = None
    method: str = ""


@contextmanager
def peak_memory(device: str | torch.device) -> Iterator[PeakMemory]:
    """Measure the peak memory of the enclosed block above what was in use when it started."""
    dev = torch.device(device)
    result = PeakMemory()
    if dev.type == "cuda":
        sync(dev)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        yield result
        sync(dev)
        result.mb, result.method = (torch.cuda.max_memory_allocated(dev) - base) / 2**20, "cuda_max_allocated"
        return
    _release_freed_memory()
    base_kb = _status_kb("VmRSS")
    if base_kb is not None and _reset_peak_rss():
        yield result
        peak_kb = _status_kb("VmHWM")
        result.mb = None if peak_kb is None else max(0, peak_kb - base_kb) / 1024
        result.method = "rss_hwm"
        return
    sampler = _RssSampler()
    sampler.start()
    try:
        yield result
    finally:
        peak_kb = sampler.stop()
    result.mb = None if base_kb is None else max(0, peak_kb - base_kb) / 1024
    result.method = "rss_sampled" if base_kb is not None else ""


@dataclass
class Measurement(Generic[T]):
    """Seconds of each repeat, their median, the peak memory over all repeats, and the last result."""

    seconds: list[float]
    peak_mem_mb: float | None
    result: T
    memory_method: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)


def measure(
    fn: Callable[[], T], repeats: int, device: str | torch.device, deadline: float | None = None,
    before_each: Callable[[], None] | None = None,
) -> Measurement[T]:
    """Run ``fn`` ``repeats`` times (at least once, fewer if ``deadline``, a ``time.monotonic`` value, passes).

    ``before_each`` (untimed) resets state such as seeds, so every repeat does the same work.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    seconds: list[float] = []
    notes: list[str] = []
    result: T
    with peak_memory(device) as mem:
        for i in range(repeats):
            if before_each is not None:
                before_each()
            sync(device)
            started = time.perf_counter()
            result = fn()
            sync(device)
            seconds.append(time.perf_counter() - started)
            if deadline is not None and time.monotonic() > deadline and i + 1 < repeats:
                notes.append(f"time budget reached: median of {i + 1} repeat(s), not {repeats}")
                break
    return Measurement(seconds, mem.mb, result, mem.method, notes)
