"""Progress bars with rate and ETA on a terminal, quiet when output is piped or logged."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


class _Quiet:
    """Iterates and counts like tqdm, prints ``write`` lines as plain lines, draws nothing."""

    def __init__(self, iterable: Iterable[T] | None):
        self._iterable = iterable if iterable is not None else ()

    def __iter__(self):
        return iter(self._iterable)

    def update(self, _: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    @staticmethod
    def write(line: str) -> None:
        print(line, flush=True)

    def set_postfix_str(self, _: str) -> None:
        pass


def progress(iterable: Iterable[T] | None, desc: str = "", unit: str = "it", total: int | None = None,
             leave: bool = False):
    """A tqdm bar on a TTY; otherwise an iterator whose ``write`` still prints progress lines.

    With ``iterable=None`` the bar is advanced by hand (``update(k)``), e.g. in images rather than batches.
    """
    if not sys.stderr.isatty():
        return _Quiet(iterable)
    return tqdm(iterable, desc=desc, unit=unit, total=total, dynamic_ncols=True, leave=leave)


def count_sweep_jobs(task_overrides: list[str], sweeper_params: dict | None = None) -> int:
    """How many jobs a Hydra multirun launches: the product of the sweep sizes of the config's
    ``hydra.sweeper.params`` (an experiment file's sweep) and the command line's overrides, which win per key."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    sizes: dict[str, int] = {}
    for override in parser.parse_overrides([f"{k}={v}" for k, v in (sweeper_params or {}).items()]) + \
            parser.parse_overrides(task_overrides):
        sizes[override.get_key_element()] = len(list(override.sweep_string_iterator())) if override.is_sweep_override() else 1
    total = 1
    for size in sizes.values():
        total *= size
    return total


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - Hydra < 1.1
    Callback = object  # type: ignore[assignment,misc]


class SweepProgress(Callback):  # type: ignore[misc]
    """Hydra callback: a bar over the jobs of a local multirun (rate and ETA), a line per job when piped."""

    def __init__(self) -> None:
        self.bar = None
        self.total = 0
        self.done = 0

    def on_multirun_start(self, config, **kwargs) -> None:
        params = config.hydra.sweeper.get("params") or {}
        self.total = count_sweep_jobs(list(config.hydra.overrides.task), {str(k): str(v) for k, v in params.items()})
        if sys.stderr.isatty():
            self.bar = tqdm(total=self.total, desc="sweep", unit="job", dynamic_ncols=True, position=1)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if not self.total:  # a single run, or jobs running elsewhere (SLURM)
            return
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        else:
            print(f"sweep: job {self.done}/{self.total} finished", flush=True)

    def on_multirun_end(self, config, **kwargs) -> None:
        if self.bar is not None:
            self.bar.close()
