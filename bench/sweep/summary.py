"""What happened to every job of a sweep: from the jobs' own status files and SLURM's queue, nothing unpickled.

    python scripts/sweep_status.py outputs/multirun/2026-12-03/10-00-00

States: ``done`` (with the leaderboard rows it wrote), ``failed`` (the error's first line), ``running``,
``pending`` (queued, or requeued after pre-emption and waiting), ``lost`` (neither finished nor known to SLURM:
killed before it could write its result; SLURM's last state is shown when it still has one).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.sweep.slurm import PENDING, RUNNING, slurm_states
from bench.sweep.status import JOBS_FILE, STATUS_FILE, read_status



@dataclass
class JobSummary:
    num: int
    overrides: list[str]
    state: str
    detail: str = ""
    job_id: str = ""
    attempts: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    folder: str = ""


def _local_alive(status: dict[str, Any]) -> bool:
    if status.get("host") != socket.gethostname() or not status.get("pid"):
        return False
    try:
        os.kill(int(status["pid"]), 0)
        return True
    except (OSError, ValueError):
        return False


def _jobs(sweep_dir: Path) -> dict[int, dict[str, Any]]:
    """The sweep's jobs: the launcher's record, else every numbered folder with a status file (basic launcher)."""
    path = sweep_dir / JOBS_FILE
    if path.exists():
        return {int(k): v for k, v in json.loads(path.read_text()).items()}
    found = {}
    for status_path in sorted(sweep_dir.glob(f"*/{STATUS_FILE}")):
        if status_path.parent.name.isdigit():
            status = read_status(status_path.parent) or {}
            found[int(status_path.parent.name)] = {"overrides": status.get("overrides", []),
                                                   "dir": str(status_path.parent), "job_ids": [], "executor": "basic"}
    return found


def summarize(sweep_dir: str | Path) -> list[JobSummary]:
    sweep_dir = Path(sweep_dir)
    jobs = _jobs(sweep_dir)
    last_ids = [v["job_ids"][-1] for v in jobs.values() if v.get("job_ids") and v.get("executor") == "slurm"]
    states = slurm_states(last_ids) if last_ids else {}
    out = []
    for num in sorted(jobs):
        entry = jobs[num]
        status = read_status(entry["dir"]) or {}
        job_id = entry["job_ids"][-1] if entry.get("job_ids") else str(status.get("job_id", ""))
        summary = JobSummary(num, list(entry.get("overrides", [])), "", job_id=job_id,
                             attempts=int(status.get("attempts", 0)), rows=list(status.get("rows") or []),
                             folder=entry["dir"])
        own = status.get("state")
        if own in ("done", "failed"):
            summary.state = own
            summary.detail = status.get("error") or ""
        elif entry.get("executor") == "slurm":
            slurm = None if states is None else states.get(job_id)
            if states is None:
                summary.state, summary.detail = own or "pending", "squeue did not answer"
            elif slurm in RUNNING:
                summary.state = "running"
            elif slurm in PENDING:
                summary.state = "pending"
                summary.detail = "requeued after pre-emption" if own == "requeued" or slurm != "PENDING" else ""
            else:
                summary.state = "lost"
                summary.detail = (f"SLURM state {slurm}" if slurm else "SLURM no longer lists it") + \
                    ("" if own else "; it never started") + "; no result written"
        else:
            summary.state = "running" if own in ("running", "requeued") and _local_alive(status) else \
                ("lost" if own else "pending")
            if summary.state == "lost":
                summary.detail = "its process is gone and it wrote no result"
        out.append(summary)
    return out


def format_summary(jobs: list[JobSummary]) -> str:
    if not jobs:
        return "sweep summary: no jobs found"
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.state] = counts.get(job.state, 0) + 1
    lines = ["sweep summary: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))]
    common = set.intersection(*(set(j.overrides) for j in jobs)) if len(jobs) > 1 else set()
    if common:  # show what each job sweeps over; what they share once
        lines.append("  all jobs: " + " ".join(o for o in jobs[0].overrides if o in common))
    for job in jobs:
        varying = " ".join(o for o in job.overrides if o not in common)
        head = f"  #{job.num:<3} {job.state:<8} {job.job_id or '-':<12} {varying}"
        if job.attempts > 1:
            head += f"  (attempt {job.attempts})"
        lines.append(head)
        if job.detail:
            lines.append(f"        {job.detail}")
        for row in job.rows:
            eps = row.get("eps_label") or row.get("eps")
            lines.append(f"        row: {row.get('dataset')}_{row.get('size')} {row.get('model')} {row.get('attack')} "
                         f"eps={eps} robust_acc={row.get('robust_acc')}")
    return "\n".join(lines)
