"""Per-sample attack records: the source of truth every reported number is computed from.

A record set is one folder:

    meta.json                      the fingerprint of what produced the records
    batches/<start>-<stop>.jsonl   one file per finished batch, one JSON line per
                                   (sample, attack, epsilon)

A batch file appears only complete (written to a temporary name, fsynced,
renamed), so a run killed at any moment loses at most the batch in flight and
resumes by skipping the batches already on disk. Attacks are seeded per call,
so a resumed run ends with exactly the numbers of an uninterrupted one.

Shards of one evaluation (``eval.num_shards``/``eval.shard``) are contiguous
runs of whole batches; they can write into the same folder, or into separate
folders that :func:`merge` combines, refusing sets with different fingerprints.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from bench.atomic import atomic_write
from bench.errors import BenchError
from bench.locks import shared_lock

FORMAT_VERSION = 1

RECORD_FIELDS = (
    "index",          # position in the evaluated split (or subset)
    "sample_id",      # position in the full MedMNIST split
    "label",          # int, or a 0/1 list for multi-label tasks
    "clean_pred",
    "clean_correct",
    "clean_scores",   # probabilities, as medmnist's Evaluator takes them
    "attack", "kind", "stage", "norm", "eps", "eps_label",
    "attacked",       # False for clean errors and, in sequential batteries, samples already broken
    "adv_pred", "adv_correct", "success", "adv_scores",
    "linf", "l2", "l0",  # perturbation norms; l0 counts changed input values
    "queries",        # model queries for score/decision-based attacks
    "forwards", "backwards",  # propagations spent on this sample
    "seconds",        # this sample's share of the attack call's wall time
    "seed",
    "model_form",     # the form the model ran in for this attack (bench.model_forms; absent in older records)
)


class RecordMismatchError(BenchError):
    """The records on disk were produced by a different configuration."""


def batch_ranges(n: int, batch_size: int) -> list[tuple[int, int]]:
    """The batches of an evaluation of ``n`` samples: fixed by n and batch size alone."""
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def shard_ranges(n: int, batch_size: int, num_shards: int, shard: int) -> list[tuple[int, int]]:
    """The batches of shard ``shard`` of ``num_shards``: a contiguous run of whole batches.

    Shards cut at batch boundaries so that every batch, and so every result, is
    the one an unsharded run would produce.
    """
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise BenchError(
            f"shard {shard} of {num_shards} is not valid; use eval.num_shards >= 1 and 0 <= eval.shard < eval.num_shards."
        )
    batches = batch_ranges(n, batch_size)
    per = math.ceil(len(batches) / num_shards)
    return batches[shard * per:(shard + 1) * per]


def _clean(value: Any) -> Any:
    """JSON has no NaN: write null; floats rounded to keep files small but exact enough."""
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.7g}")
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _differences(expected: Mapping[str, Any], found: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Readable 'key: found -> expected' lines for nested dicts."""
    out = []
    for key in sorted(set(expected) | set(found)):
        a, b = found.get(key, "<missing>"), expected.get(key, "<missing>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _differences(b, a, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: records have {a!r}, this run has {b!r}")
    return out


class RecordSet:
    """A folder of per-sample records for one evaluation (see the module docstring)."""

    def __init__(self, root: str | Path, fingerprint: Mapping[str, Any]):
        self.root = Path(root)
        self.fingerprint = json.loads(json.dumps(dict(fingerprint), default=str))

    @classmethod
    def open(cls, root: str | Path, fingerprint: Mapping[str, Any]) -> "RecordSet":
        """Create the set, or reopen it to resume; refuse records from a different configuration."""
        records = cls(root, fingerprint)
        records.root.mkdir(parents=True, exist_ok=True)
        (records.root / "batches").mkdir(exist_ok=True)
        meta_path = records.root / "meta.json"
        with shared_lock(str(meta_path) + ".lock", timeout=120):
            if meta_path.exists():
                meta = json.loads(meta_path.read_text())
                found = meta.get("fingerprint", {})
                if found != records.fingerprint:
                    diffs = _differences(records.fingerprint, found)
                    raise RecordMismatchError(
                        f"the records in {records.root} come from a different configuration, so this run cannot "
                        f"resume from them:\n  " + "\n  ".join(diffs[:12])
                        + "\nPoint records.dir somewhere else (or leave it null for a folder per configuration), "
                        "or delete that folder to start over."
                    )
            else:
                atomic_write(meta_path, json.dumps(
                    {"format": FORMAT_VERSION, "fingerprint": records.fingerprint}, indent=2, sort_keys=True) + "\n")
        return records

    @classmethod
    def load(cls, root: str | Path) -> "RecordSet":
        """Open an existing set for reading."""
        meta_path = Path(root) / "meta.json"
        if not meta_path.exists():
            raise BenchError(f"{root} is not a record set (no meta.json); record sets are written by scripts/attack.py.")
        return cls(root, json.loads(meta_path.read_text())["fingerprint"])

    def finalize_lock(self):
        """Held by a shard while it decides whether it is the last one and writes the summary and rows: taking it
        revalidates a shared filesystem's view of ``batches/``, so the last shard to finish always sees all of them."""
        return shared_lock(str(self.root / "finalize.lock"), timeout=3600)

    def batch_path(self, start: int, stop: int) -> Path:
        return self.root / "batches" / f"{start:07d}-{stop:07d}.jsonl"

    def has_batch(self, start: int, stop: int) -> bool:
        return self.batch_path(start, stop).exists()

    def finished_batches(self) -> list[tuple[int, int]]:
        """(start, stop) of every complete batch file, in order (temporary files are ignored)."""
        out = []
        for path in (self.root / "batches").glob("*.jsonl"):
            start, stop = path.stem.split("-")
            out.append((int(start), int(stop)))
        return sorted(out)

    def missing_batches(self, n: int, batch_size: int) -> list[tuple[int, int]]:
        done = set(self.finished_batches())
        return [b for b in batch_ranges(n, batch_size) if b not in done]

    def write_batch(self, start: int, stop: int, records: Iterable[Mapping[str, Any]]) -> Path:
        """Write one batch's records atomically; the file is there complete or not at all."""
        lines = [json.dumps({k: r.get(k) if k == "eps" else _clean(r.get(k)) for k in RECORD_FIELDS}, separators=(",", ":"))
                 for r in records]
        path = self.batch_path(start, stop)
        atomic_write(path, "\n".join(lines) + "\n")
        return path

    def read(self) -> pd.DataFrame:
        """Every record, as a DataFrame sorted by sample, stage and epsilon."""
        frames = []
        for start, stop in self.finished_batches():
            with open(self.batch_path(start, stop)) as fh:
                frames.append(pd.DataFrame([json.loads(line) for line in fh if line.strip()], columns=RECORD_FIELDS))
        if not frames:
            return pd.DataFrame(columns=RECORD_FIELDS)
        frame = pd.concat(frames, ignore_index=True)
        return frame.sort_values(["index", "stage", "eps"], kind="stable").reset_index(drop=True)

    def write_extra(self, name: str, write) -> Path:
        """Write a side file (examples, summary) atomically: ``write(tmp_path)`` fills it."""
        path = self.root / name
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path


def merge(sources: Iterable[str | Path], dest: str | Path) -> RecordSet:
    """Combine shards written to separate folders into one record set at ``dest``.

    Every source must carry the same fingerprint; a batch present in two
    sources must be byte-identical (it is the same computation), else the
    merge is refused.
    """
    sources = [RecordSet.load(s) for s in sources]
    if not sources:
        raise BenchError("merge needs at least one record set")
    first = sources[0]
    for other in sources[1:]:
        if other.fingerprint != first.fingerprint:
            diffs = _differences(first.fingerprint, other.fingerprint)
            raise RecordMismatchError(
                f"cannot merge {other.root} into {first.root}: different configurations:\n  " + "\n  ".join(diffs[:12])
            )
    target = RecordSet.open(dest, first.fingerprint)
    for source in sources:
        if source.root.resolve() == target.root.resolve():
            continue
        for start, stop in source.finished_batches():
            src, dst = source.batch_path(start, stop), target.batch_path(start, stop)
            if dst.exists():
                if dst.read_bytes() != src.read_bytes():
                    raise RecordMismatchError(f"batch {start}-{stop} differs between {source.root} and {target.root}")
                continue
            tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
    return target
