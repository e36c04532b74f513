"""Asking SLURM about jobs: its queue (squeue) and its limits (scontrol); never its accounting database,
which many clusters (and the local one) do not run."""

from __future__ import annotations

import re
import subprocess

DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default
RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "RESIZING"}
PENDING = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "PREEMPTED", "SUSPENDED", "RESV_DEL_HOLD"}
STILL_ACTIVE = RUNNING | PENDING  # anything else (COMPLETED, FAILED, CANCELLED, TIMEOUT, ...) has ended


def max_array_size() -> int:
    """The cluster's MaxArraySize (an array may hold task ids 0 .. MaxArraySize-1)."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return DEFAULT_MAX_ARRAY_SIZE
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE


def slurm_states(job_ids: list[str]) -> dict[str, str] | None:
    """SLURM's state of each job id its queue still lists, in one call (None when squeue cannot be asked).

    Array tasks are listed one by one (``-r``), as ``<array job>_<task>``, the ids submitit uses.
    """
    if not job_ids:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return None
    states = {}
    for line in out.stdout.splitlines():
        if "|" in line:
            job_id, state = line.strip().split("|", 1)
            states[job_id] = state
    return states
