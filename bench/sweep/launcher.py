"""Hydra launchers for sweeps: submitit's, plus what a benchmark sweep needs on a real cluster.

Selected by ``hydra/launcher=slurm`` or ``hydra/launcher=local`` (``conf/hydra/launcher/``; Hydra instantiates
launchers only from the ``hydra_plugins`` package, so ``hydra_plugins/medbench_sweep`` names these classes there).
On top of ``hydra-submitit-launcher`` they:

- skip jobs whose status file (``bench/sweep/status.py``) says they are done with the same overrides, so
  re-submitting a finished sweep into its folder (``hydra.sweep.dir=...``) submits nothing;
- split a sweep larger than the cluster's ``MaxArraySize`` into arrays that fit (sbatch refuses larger ones);
- turn a refused ``sbatch`` (an unknown partition, account ...) into one clear error carrying sbatch's message;
- wait without hanging: a job SLURM no longer knows that left no result is reported ``lost`` after
  ``lost_after_s`` instead of being waited for forever (submitit treats an unknown state as still running);
- print the sweep summary (``scripts/sweep_status.py``) when the sweep ends, failures included: a task that
  raised is reported failed with its error's first line, not "completed".

Pre-emption is submitit's: on SIGUSR2 the job is checkpointed (Hydra's launcher re-submits the same task) and
requeued; the task resumes from its per-sample records. ``max_num_timeout`` bounds requeues after time limits.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
from omegaconf import OmegaConf, open_dict

from bench.atomic import atomic_write
from bench.errors import BenchError
from bench.sweep.slurm import STILL_ACTIVE, max_array_size, slurm_states
from bench.sweep.status import JOBS_FILE, read_status

log = logging.getLogger(__name__)



class SweepError(BenchError):
    """The sweep could not be submitted (nothing was submitted when this is raised before submission)."""


class LostJobError(BenchError):
    """SLURM no longer knows a job and it left no result: killed before it could write one."""


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    size = max(1, int(size))
    return [items[i:i + size] for i in range(0, len(items), size)]


class _SweepMixin:
    """What both launchers add to submitit's (see the module docstring)."""

    OWN_PARAMS = {"lost_after_s": 300.0, "poll_s": 5.0, "skip_done": True}
    _EXECUTOR: str

    def __init__(self, **params: Any) -> None:
        own = {k: params.pop(k, default) for k, default in self.OWN_PARAMS.items()}
        super().__init__(**params)  # type: ignore[call-arg]
        self.lost_after_s = float(own["lost_after_s"])
        self.poll_s = float(own["poll_s"])
        self.skip_done = bool(own["skip_done"])

    # -- the sweep's jobs ------------------------------------------------------------------------------------
    def _job_dir(self, overrides: Sequence[str], num: int) -> Path:
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))  # type: ignore[attr-defined]
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = num
        return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)

    def _executor(self):
        import submitit

        params = dict(self.params)  # type: ignore[attr-defined]
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
        return executor

    def _chunk_size(self) -> int:
        raise NotImplementedError

    def _submit(self, executor, job_params: Sequence[tuple]) -> list[Any]:
        try:
            return executor.map_array(self, *zip(*job_params))
        except Exception as exc:  # submitit wraps sbatch's refusal; keep sbatch's own words
            raise SweepError(f"the cluster refused the sweep: {str(exc).strip()}\nCheck hydra.launcher.partition/account/qos "
                             "(sinfo lists partitions; sacctmgr show assoc your accounts).") from None

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None  # type: ignore[attr-defined]
        sweep_dir = Path(str(self.config.hydra.sweep.dir))  # type: ignore[attr-defined]
        sweep_dir.mkdir(parents=True, exist_ok=True)
        returns: dict[int, JobReturn] = {}
        todo: list[tuple] = []
        dirs: dict[int, Path] = {}
        for offset, overrides in enumerate(job_overrides):
            num = initial_job_idx + offset
            dirs[num] = self._job_dir(overrides, num)
            status = read_status(dirs[num]) if self.skip_done else None
            if status and status.get("state") == "done" and status.get("overrides") == list(overrides):
                log.info(f"\t#{num} : already done in {dirs[num]}, not submitted")
                returns[num] = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED,
                                         _return_value=status.get("rows", []), working_dir=str(dirs[num]))
                continue
            log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
            todo.append((list(overrides), "hydra.sweep.dir", num, f"job_id_for_{num}", Singleton.get_state()))
        if todo:
            log.info(f"Submitit '{self._EXECUTOR}' sweep: {len(todo)} job(s) to run, {len(returns)} already done; "
                     f"output in {sweep_dir}")
            returns.update(self._run(todo, sweep_dir, dirs))
        else:
            log.info(f"nothing to submit: all {len(returns)} job(s) of this sweep are done in {sweep_dir}")
        from bench.sweep.summary import format_summary, summarize

        print(format_summary(summarize(sweep_dir)), flush=True)
        return [returns[initial_job_idx + i] for i in range(len(job_overrides))]

    def _run(self, todo: list[tuple], sweep_dir: Path, dirs: dict[int, Path]) -> dict[int, JobReturn]:
        executor = self._executor()
        returns: dict[int, JobReturn] = {}
        submitted: list[tuple[Sequence[tuple], list[Any]]] = []
        for part in chunks(todo, self._chunk_size()):
            jobs = self._submit(executor, part)
            self._record_jobs(sweep_dir, part, jobs, dirs)
            if self._wait_each_chunk():
                returns.update(self._wait(part, jobs))
            else:
                submitted.append((part, jobs))
        for part, jobs in submitted:
            returns.update(self._wait(part, jobs))
        return returns

    def _wait_each_chunk(self) -> bool:
        return False

    def _record_jobs(self, sweep_dir: Path, part: Sequence[tuple], jobs: Sequence[Any], dirs: dict[int, Path]) -> None:
        path = sweep_dir / JOBS_FILE
        known = json.loads(path.read_text()) if path.exists() else {}
        for params, job in zip(part, jobs):
            num = params[2]
            entry = known.get(str(num), {})
            ids = [*entry.get("job_ids", []), str(job.job_id)]
            known[str(num)] = {"overrides": params[0], "dir": str(dirs[num]), "job_ids": ids,
                               "executor": self._EXECUTOR, "submitted": time.time()}
        atomic_write(path, json.dumps(known, indent=2, sort_keys=True) + "\n")

    def _wait(self, part: Sequence[tuple], jobs: Sequence[Any]) -> dict[int, JobReturn]:
        """Each job's JobReturn once it has finished or is lost; never waits on a job SLURM has forgotten."""
        waiting = {params[2]: (params, job) for params, job in zip(part, jobs)}
        unknown_since: dict[int, float] = {}
        returns: dict[int, JobReturn] = {}
        while waiting:
            states = slurm_states([str(job.job_id) for _, job in waiting.values()]) if self._EXECUTOR == "slurm" else {}
            for num, (params, job) in list(waiting.items()):
                if job.done():
                    returns[num] = self._collect(params, job)
                    del waiting[num]
                elif self._EXECUTOR == "slurm" and (states is None or states.get(str(job.job_id)) not in STILL_ACTIVE):
                    # ended, forgotten, or SLURM not answering, and no result file: submitit's sacct view may
                    # never say so (it reads an unknown state as still running), so stop waiting after a while
                    first = unknown_since.setdefault(num, time.time())
                    if time.time() - first > self.lost_after_s:
                        seen = "squeue did not answer" if states is None else \
                            f"SLURM state {states.get(str(job.job_id)) or 'unknown (no longer listed)'}"
                        error = LostJobError(
                            f"job #{num} (SLURM {job.job_id}) is lost: {seen} and no result after "
                            f"{self.lost_after_s:.0f}s; its log is {job.paths.stderr}. Re-submit the sweep into "
                            "the same hydra.sweep.dir to run it again (finished jobs are skipped).")
                        returns[num] = JobReturn(overrides=params[0], status=JobStatus.FAILED, _return_value=error)
                        del waiting[num]
                else:
                    unknown_since.pop(num, None)
            if waiting:
                time.sleep(self.poll_s)
        return returns

    @staticmethod
    def _collect(params: tuple, job: Any) -> JobReturn:
        try:
            return job.results()[0]
        except Exception as exc:  # killed, cancelled, out of memory, or a crash outside the task
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return JobReturn(overrides=params[0], status=JobStatus.FAILED,
                             _return_value=SweepError(f"job #{params[2]} ({job.job_id}) ended without a result: {first}"))


class SlurmSweepBase(_SweepMixin, SlurmLauncher):
    """``hydra/launcher=slurm``: arrays split to the cluster's MaxArraySize, all submitted, then awaited."""

    def _chunk_size(self) -> int:
        return max_array_size()


class LocalSweepBase(_SweepMixin, LocalLauncher):
    """``hydra/launcher=local``: the same sweep as local processes, ``array_parallelism`` at a time."""

    OWN_PARAMS = {**_SweepMixin.OWN_PARAMS, "array_parallelism": 2}

    def __init__(self, **params: Any) -> None:
        parallelism = params.get("array_parallelism", self.OWN_PARAMS["array_parallelism"])
        super().__init__(**params)
        self.parallelism = int(parallelism)

    def _chunk_size(self) -> int:
        return self.parallelism

    def _wait_each_chunk(self) -> bool:
        return True
