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

    def log_results(self, rows: Sequence[dict[str, Any]], records: Any = None, examples: Path | None = None) -> None:
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

    def log_results(self, rows: Sequence[dict[str, Any]], records: Any = None, examples: Path | None = None) -> None:
        """Per-epsilon metrics, a robust-accuracy-vs-epsilon chart, summary keys, tables and example images."""
        if not rows:
            return
        wandb = self._wandb
        by_eps: dict[float, dict[str, Any]] = {}
        for row in rows:
            step = by_eps.setdefault(float(row["eps"]), {"eps": float(row["eps"])})
            for key in LOGGED_METRICS:
                value = row.get(key)
                if isinstance(value, (int, float)):
                    step[f"{row['attack']}/{key}"] = value
                    self.run.summary[f"{row['attack']}/eps={row['eps_label']}/{key}"] = value
        for eps in sorted(by_eps):
            self.run.log(by_eps[eps])
        attacks = list(dict.fromkeys(r["attack"] for r in rows))
        xs = sorted(by_eps)
        curves = [[by_eps[e].get(f"{a}/robust_acc", float("nan")) for e in xs] for a in attacks]
        extra: dict[str, Any] = {
            "robust_acc_vs_eps": wandb.plot.line_series(
                xs=xs, ys=curves, keys=attacks, title="robust accuracy vs epsilon", xname="epsilon"),
            "summary_table": wandb.Table(columns=list(rows[0]), data=[[_cell(r.get(c)) for c in rows[0]] for r in rows]),
        }
        if records is not None and len(records):
            frame = records.copy()
            for column in ("label", "clean_pred", "adv_pred", "clean_scores", "adv_scores"):
                frame[column] = frame[column].map(_cell)
            extra["per_sample"] = wandb.Table(dataframe=frame)
        if examples is not None and Path(examples).exists():
            extra["examples"] = _example_image(wandb, Path(examples))
        self.run.log(extra)

    def finish(self) -> None:
        self.run.finish()


LOGGED_METRICS = (
    "clean_acc", "robust_acc", "robust_acc_lo", "robust_acc_hi", "asr", "asr_lo", "asr_hi", "clean_auc", "adv_auc",
    "linf_median", "l2_median", "queries_median", "forwards_per_sample", "backwards_per_sample", "seconds",
)


def _cell(value: Any) -> Any:
    """Table cells must be scalars: lists become their JSON text."""
    import json

    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value


def _example_image(wandb, path: Path):
    """The clean / adversarial / magnified-perturbation grid of a run's examples.npz."""
    import numpy as np

    from bench.report import example_grid

    data = np.load(path)
    grid = example_grid(data["clean"], data["adv"], [str(e) for e in data["eps_labels"]])
    caption = (f"rows: clean, then per epsilon ({', '.join(str(e) for e in data['eps_labels'])}) the adversarial image "
               "and its perturbation magnified to full range around grey")
    return wandb.Image(grid, caption=caption)


SINKS: dict[str, Callable[..., Any]] = {"none": lambda config, **_: NullSink(), "wandb": WandbSink}


def make_sink(logger_cfg: dict[str, Any], config: dict[str, Any], name: str | None = None):
    """Build the sink named by ``logger_cfg['name']`` with its own options."""
    kind = logger_cfg.get("name", "none")
    if kind not in SINKS:
        raise unknown_choice("logger", kind, SINKS, "Set logger=<name>.")
    options = dict(logger_cfg.get(kind) or {})
    return SINKS[kind](config, name=name, **options)


def _leveldb_records(data: bytes):
    """Payloads of W&B's transaction log (LevelDB log format: 32 KiB blocks of crc/length/type chunks)."""
    import struct

    if data[:4] != b":W&B":
        raise ValueError("not a W&B transaction log (missing ':W&B' header)")
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:  # full
            yield chunk
        elif kind == 2:  # first
            pending = chunk
        elif kind == 3:  # middle
            pending += chunk
        elif kind == 4:  # last
            yield pending + chunk
            pending = b""


def read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    """Read an offline run back from its ``run-*.wandb`` file: run facts, config, history steps and summary.

    ``run_dir`` is the ``offline-run-*`` folder, or any folder above it holding exactly one (the Hydra run
    folder a run printed). For checking what was logged without a W&B server (tests, audits).
    """
    import json

    from wandb.proto import wandb_internal_pb2

    from bench.errors import ConfigError

    found = sorted(Path(run_dir).glob("run-*.wandb")) or sorted(Path(run_dir).glob("**/offline-run-*/run-*.wandb"))
    if len(found) != 1:
        what = "no run-*.wandb file" if not found else f"{len(found)} offline runs ({', '.join(str(f.parent) for f in found[:4])})"
        raise ConfigError(f"{run_dir}: {what} in it or in an offline-run-* folder below it. Pass a W&B offline run "
                          "folder (wandb/offline-run-*, inside the Hydra run folder of a run with logger=wandb).")
    path = found[0]
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    run: dict[str, Any] = {}

    def key_of(item) -> str:
        return "/".join(item.nested_key) if item.nested_key else item.key

    for payload in _leveldb_records(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = {"id": record.run.run_id, "group": record.run.run_group, "project": record.run.project,
                   "name": record.run.display_name}
        if kind in ("config", "run"):
            updates = record.config.update if kind == "config" else record.run.config.update
            for item in updates:
                config[key_of(item)] = json.loads(item.value_json)
        elif kind == "history":
            history.append({key_of(item): json.loads(item.value_json) for item in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                summary[key_of(item)] = json.loads(item.value_json)
    return {"run": run, "config": config, "history": history, "summary": summary}
