"""Errors that tell the user the bad value, the valid choices and the fix."""

from __future__ import annotations

from collections.abc import Iterable


class BenchError(Exception):
    """Base class: every medbench error is a user-facing, actionable message."""


class ConfigError(BenchError, ValueError):
    """A config value is invalid (unknown name, out-of-range number ...)."""


class DataError(BenchError):
    """A dataset file is missing, corrupt or does not have the requested split/size."""


class CheckpointError(BenchError):
    """A checkpoint cannot be trusted or does not fit the dataset."""


class ThreatModelViolation(BenchError, AssertionError):
    """An attack returned an example outside its threat model (a bug, never clipped away)."""


def unknown_choice(kind: str, value: object, choices: Iterable[str], fix: str = "") -> ConfigError:
    """Build the standard 'unknown X' error listing every valid name."""
    listed = ", ".join(sorted(choices))
    msg = f"unknown {kind} {value!r}; valid choices: {listed}."
    if fix:
        msg += f" {fix}"
    return ConfigError(msg)
