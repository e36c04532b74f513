"""How long the README's first command takes, end to end, as a newcomer runs it (install excluded).

    python scripts/bench_quickstart.py                       # writes results/perf/quickstart.md and .json
    python scripts/bench_quickstart.py --variants shipped    # just the shipped quickstart

Each variant runs ``python scripts/attack.py experiment=quickstart [overrides]`` twice in an empty workspace
(``MEDBENCH_HOME`` = a fresh temporary folder, so no model, compiled artefact or record is reused from
elsewhere): the first run trains its model, the second reuses it. ``previous`` is the quickstart before the
change (the CIFAR-stem ResNet-18 and the compiled model form), measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

VARIANTS = {
    "shipped": (),
    "previous": ("model=resnet18_28", "eval.model_form=auto"),
}

STAGES = {  # what the run prints, and the stage it times
    "training_s": re.compile(r"^saved .* best epoch \d+\s+(\d+)s", re.M),
    "model_form_s": re.compile(r"model form: .*prepared and checked in ([\d.]+)s", re.M),
    "attack_s": re.compile(r"batch\(es\) attacked in ([\d.]+)s", re.M),
    "test_acc": re.compile(r"^saved .* test_acc ([\d.]+)", re.M),
}


def run_once(overrides: tuple[str, ...], workspace: Path, data_root: str) -> dict:
    env = {**os.environ, "MEDBENCH_HOME": str(workspace), "MEDMNIST_ROOT": data_root, "WANDB_SILENT": "true"}
    env.pop("MEDBENCH_MODEL_FORM", None)
    command = [sys.executable, str(REPO / "scripts" / "attack.py"), "experiment=quickstart", *overrides]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"quickstart failed ({' '.join(overrides) or 'shipped'}):\n{proc.stderr[-3000:]}")
    result = {"wall_s": round(wall, 1)}
    for key, pattern in STAGES.items():
        match = pattern.search(proc.stdout)
        result[key] = float(match.group(1)) if match else None
    result["reused_model"] = "reusing trained model" in proc.stdout
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--out-dir", type=Path, default=REPO / "results" / "perf")
    parser.add_argument("--data-root", default=os.environ.get("MEDMNIST_ROOT", str(REPO.parent / "shared" / "data" / "medmnist")))
    args = parser.parse_args(argv)
    import torch

    rows = []
    for name in args.variants.split(","):
        overrides = VARIANTS[name]
        with tempfile.TemporaryDirectory(prefix="medbench-quickstart-") as tmp:
            for attempt in ("first run (trains)", "second run (reuses)"):
                result = run_once(overrides, Path(tmp), args.data_root)
                rows.append({"variant": name, "overrides": " ".join(overrides), "run": attempt, **result})
                print(json.dumps(rows[-1]), flush=True)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "torch": torch.__version__, "load_avg_end": round(os.getloadavg()[0], 2)}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "quickstart.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    lines = ["# The quickstart, end to end", "",
             "Written by `python scripts/bench_quickstart.py`: `python scripts/attack.py experiment=quickstart` in an",
             "empty workspace (no zoo, no records, no compiled artefacts), then again in the same workspace; the",
             "wall time is the whole process (imports, data, training, model form, attacks, checks, W&B offline run,",
             "leaderboard rows); the stages are what the run prints. `previous` is the quickstart before it was sized",
             "for a first run (`model=resnet18_28 eval.model_form=auto`), measured in the same run.", "",
             "| variant | run | wall s | training s | model form s | attacks s | test acc |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = [r["variant"] + (f" (`{r['overrides']}`)" if r["overrides"] else ""), r["run"], f"{r['wall_s']:.1f}"]
        cells += ["-" if r[k] is None else f"{r[k]:g}" for k in ("training_s", "model_form_s", "attack_s", "test_acc")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Machine: {machine['cpu']}, {machine['cores']} logical cores, torch {machine['torch']}; load "
              f"average at the end {machine['load_avg_end']}.", ""]
    (args.out_dir / "quickstart.md").write_text("\n".join(lines))
    print(f"wrote {args.out_dir / 'quickstart.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
