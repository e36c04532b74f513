"""Hydra only instantiates launchers defined under ``hydra_plugins``: these two names are all that lives here.

``conf/hydra/launcher/slurm.yaml`` and ``local.yaml`` select them; the behaviour is in ``bench/sweep/launcher.py``.
"""

from __future__ import annotations

from bench.sweep.launcher import LocalSweepBase, SlurmSweepBase


class SlurmSweepLauncher(SlurmSweepBase):
    """``hydra/launcher=slurm``."""


class LocalSweepLauncher(LocalSweepBase):
    """``hydra/launcher=local``."""
