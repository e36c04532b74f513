"""Experiment-tracker sinks: W&B (offline by default) or none, chosen by ``logger.name``."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.errors import unknown_choice


class NullSink:
    """Logs nothing; summary.json and the leaderboard are still written."""

    run_dir: Path | None = None

    def log_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbSink:
    """One W&B run per experiment: the resolved config, one history step per row, a table, summary keys."""

    def __init__(self, config: dict[str, Any], mode: str = "offline", project: str = "medbench",
                 entity: str | None = None, group: str | None = None, dir: str | None = None,
                 tags: Sequence[str] = (), name: str | None = None):
        import wandb

        if dir:
            Path(dir).mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        self._wandb = wandb
        self.run = wandb.init(
            mode=mode, project=project, entity=entity, group=group, dir=dir, config=config,
            tags=list(tags), name=name, reinit="finish_previous",
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )
        self.run_dir = Path(self.run.dir).parent if self.run is not None else None

    def log_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        columns = list(rows[0])
        table = self._wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])
        for row in rows:
            self.run.log({k: v for k, v in row.items() if isinstance(v, (int, float))} | {"attack_name": row["attack"]})
            prefix = f"{row['attack']}/eps={row['eps']:.6g}"
            for key in ("robust_acc", "asr", "clean_acc", "linf_median", "l2_median"):
                self.run.summary[f"{prefix}/{key}"] = row[key]
        self.run.log({"summary_table": table})

    def finish(self) -> None:
        self.run.finish()


SINKS: dict[str, Callable[..., Any]] = {"none": lambda config, **_: NullSink(), "wandb": WandbSink}


def make_sink(logger_cfg: dict[str, Any], config: dict[str, Any], name: str | None = None):
    """Build the sink named by ``logger_cfg['name']`` with its own options."""
    kind = logger_cfg.get("name", "none")
    if kind not in SINKS:
        raise unknown_choice("logger", kind, SINKS, "Set logger=<name>.")
    options = dict(logger_cfg.get(kind) or {})
    return SINKS[kind](config, name=name, **options)
