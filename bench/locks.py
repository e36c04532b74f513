"""Locks on files that many jobs, on many nodes, share: the leaderboard CSVs, the zoo, the records.

``filelock.FileLock`` takes an ``flock`` lock. On Linux an NFS client turns ``flock`` into a POSIX byte-range
lock that the server arbitrates (NLM for NFSv3, the protocol's own locks for NFSv4), so it excludes writers on
other nodes too, and the server drops it when the holder dies (NFSv4 lease expiry), so a killed job never leaves
a stale lock. Taking it also revalidates NFS's attribute cache, so a reader under the lock sees the files the
previous holder wrote. Lustre honours it when mounted with ``-o flock``; on a filesystem without cluster-wide
locks (Lustre with ``localflock``, some FUSE mounts) set ``MEDBENCH_LOCK=soft``: an O_EXCL lock file, which every
filesystem supports but which a killed job leaves behind (delete the ``.lock`` file it names to go on).
"""

from __future__ import annotations

import os

from filelock import BaseFileLock, FileLock, SoftFileLock

from bench.errors import ConfigError

KINDS = {"flock": FileLock, "soft": SoftFileLock}


def shared_lock(path: str, timeout: float = 120) -> BaseFileLock:
    """A lock on ``path`` (a ``.lock`` file) of the kind ``MEDBENCH_LOCK`` names (``flock`` unless set)."""
    kind = os.environ.get("MEDBENCH_LOCK", "flock")
    if kind not in KINDS:
        raise ConfigError(f"MEDBENCH_LOCK={kind!r} is not a lock kind; valid choices: {', '.join(KINDS)}. "
                          "Use flock (default) unless your shared filesystem has no cluster-wide locks.")
    return KINDS[kind](path, timeout=timeout)
