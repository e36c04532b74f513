"""Each sweep job's own account of itself: ``medbench_status.json`` in its Hydra output folder.

Hydra's launchers report a task that raised as completed (the error lives only in
submitit's pickled result), and a job killed before it returns leaves nothing at
all. So every job of a sweep writes its state itself, atomically: ``running``
when it starts (with its SLURM ids and attempt number), then ``done`` with the
leaderboard rows it wrote, or ``failed`` with the error's first line and the
traceback. ``bench/sweep/summary.py`` reads these files and SLURM's queue to say
what happened to every job, without unpickling anything.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.atomic import atomic_write

STATUS_FILE = "medbench_status.json"
JOBS_FILE = "medbench_jobs.json"  # in the sweep folder: job number -> overrides, output folder, cluster job ids
STATES = ("running", "done", "failed", "requeued")


def slurm_ids() -> dict[str, str]:
    """The SLURM job id, array ids and restart count of this process (empty outside SLURM)."""
    names = {"job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID", "array_task_id": "SLURM_ARRAY_TASK_ID",
             "restart_count": "SLURM_RESTART_COUNT"}
    return {k: os.environ[v] for k, v in names.items() if os.environ.get(v)}


def row_summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """What the summary shows of a leaderboard row this job wrote."""
    keep = ("dataset", "size", "norm", "model", "defense", "attack", "eps", "eps_label", "robust_acc", "n")
    return {k: row.get(k) for k in keep if k in row}


def write_status(folder: str | Path, state: str, **fields: Any) -> Path:
    if state not in STATES:
        raise ValueError(f"unknown job state {state!r}; valid: {', '.join(STATES)}")
    path = Path(folder) / STATUS_FILE
    previous = read_status(path.parent) or {}
    payload = {**previous, **fields, "state": state, "updated": time.time(), "host": socket.gethostname(),
               "pid": os.getpid(), **slurm_ids()}
    attempts = int(previous.get("attempts", 0)) + (1 if state == "running" else 0)
    payload["attempts"] = attempts
    return atomic_write(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_status(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / STATUS_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:  # atomic writes make this a foreign or hand-edited file
        return {"state": "failed", "error": f"unreadable {STATUS_FILE}: {exc}"}


class _RequeueSignalWatch:
    """Notes whether SLURM's pre-emption/time-limit signal arrived, then lets submitit's own handler act on it.

    submitit requeues a job on SIGUSR2 (it sets ``--signal=USR2@<delay>``) and then exits with ``SystemExit(-1)``;
    that exit must be recorded as ``requeued``, not ``failed``.
    """

    def __init__(self) -> None:
        self.received = False
        self.signum = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)
        self.previous = None

    def __enter__(self) -> _RequeueSignalWatch:
        try:
            self.previous = signal.getsignal(self.signum)
            if callable(self.previous):  # only inside a submitit job is there a handler to wrap
                signal.signal(self.signum, self._handle)
        except ValueError:  # not the main thread: nothing to watch
            self.previous = None
        return self

    def _handle(self, signum, frame) -> None:
        self.received = True
        self.previous(signum, frame)  # type: ignore[misc]

    def __exit__(self, *exc) -> None:
        if callable(self.previous):
            signal.signal(self.signum, self.previous)


@contextmanager
def job_status(folder: str | Path, overrides: Sequence[str]) -> Iterator[list[dict[str, Any]]]:
    """Mark the job running, then done (with the rows appended to the yielded list), requeued or failed.

    Catches ``BaseException`` on purpose: a job that exits through ``SystemExit`` (our clear-error path) must
    still say so, and submitit's exit after requeueing a pre-empted job is recorded as ``requeued``; the
    requeued attempt re-enters this and counts one more attempt.
    """
    started = time.time()
    write_status(folder, "running", overrides=list(overrides), started=started, error=None, traceback=None)
    rows: list[dict[str, Any]] = []
    with _RequeueSignalWatch() as watch:
        try:
            yield rows
        except BaseException as exc:
            text = str(exc).strip() or type(exc).__name__
            if watch.received and isinstance(exc, SystemExit):
                write_status(folder, "requeued", finished=time.time(), seconds=time.time() - started)
                raise
            write_status(folder, "failed", finished=time.time(), seconds=time.time() - started,
                         error=text.splitlines()[0] if isinstance(exc, SystemExit) else  # already "error: ..."
                         f"{type(exc).__name__}: {text.splitlines()[0]}",
                         traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-8000:])
            raise
    write_status(folder, "done", finished=time.time(), seconds=time.time() - started,
                 rows=[row_summary(r) for r in rows])
