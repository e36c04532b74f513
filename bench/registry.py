"""One registry helper: a named, listable map filled by a decorator, with the standard 'unknown name' error.

Registries (checks, admission rules, ...) are how medbench grows without if/elif
chains: adding an entry is one decorated function, and everything that lists or
tests the registry picks it up by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from bench.errors import unknown_choice

T = TypeVar("T")


class Registry(Generic[T]):
    """``name -> entry``; ``@registry.register(name)`` adds one; ``registry[name]`` names every choice when unknown."""

    def __init__(self, kind: str, fix: str = ""):
        self.kind, self.fix = kind, fix
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return deco

    def add(self, name: str, entry: T) -> T:
        return self.register(name)(entry)

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise unknown_choice(self.kind, name, self._entries, self.fix)
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def values(self) -> list[T]:
        return list(self._entries.values())
