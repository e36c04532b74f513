"""Progress bars with rate and ETA on a terminal, quiet when output is piped or logged."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


class _Quiet:
    """Iterates like tqdm, prints ``write`` lines as plain lines, draws nothing."""

    def __init__(self, iterable: Iterable[T]):
        self._iterable = iterable

    def __iter__(self):
        return iter(self._iterable)

    @staticmethod
    def write(line: str) -> None:
        print(line, flush=True)

    def set_postfix_str(self, _: str) -> None:
        pass


def progress(iterable: Iterable[T], desc: str = "", unit: str = "it", total: int | None = None):
    """A tqdm bar on a TTY; otherwise an iterator whose ``write`` still prints progress lines."""
    if not sys.stderr.isatty():
        return _Quiet(iterable)
    return tqdm(iterable, desc=desc, unit=unit, total=total, dynamic_ncols=True, leave=False)
