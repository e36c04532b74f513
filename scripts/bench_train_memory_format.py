"""Cost of a training step with batches and weights in channels_last (NHWC) against PyTorch's default layout.

Why medbench trains in PyTorch's default (contiguous, NCHW) layout: measured on this CPU, channels_last buys
nothing (``results/perf/train_memory_format.md``). Kept so the question can be asked again on other hardware
(GPUs' tensor cores do prefer NHWC).

    python scripts/bench_train_memory_format.py --threads 1                 # every 2D zoo model, fp32 and bf16
    python scripts/bench_train_memory_format.py --models resnet18_28 --precisions fp32 --batches 2 --out /tmp/m.md

For each model and ``train.precision``, two copies with the same initial weights, one contiguous and one
channels_last, each with its own Adam, take training steps (``bench.benchmark.train_step``: the loss under the
precision, backward, Adam step) on the same real train batches, alternating batch by batch so a shared CPU slows
both alike; medians after a warm-up. Writes a Markdown table and a JSON sidecar.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
from pathlib import Path

import torch

from bench.benchmark.inputs import model_spec
from bench.benchmark.report import write_report
from bench.benchmark.train_step import benchmark_parser, full_batches, machine_facts, timed_step
from bench.data import load_split
from bench.models import build_model
from bench.precision import PRECISIONS, training_precision

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = benchmark_parser(__doc__, "train_memory_format.md")
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    p.add_argument("--batches", type=int, default=4, help="timed batches of each layout (default: %(default)s)")
    return p.parse_args(argv)


def time_layouts(name: str, precision: str, args: argparse.Namespace) -> dict[str, object]:
    train = load_split(args.dataset, "train", 28, args.root)
    task = train.info.task
    targets = task.labels_as_targets(train.labels)
    spec = model_spec(name)
    steps = {}
    for layout in LAYOUTS:
        torch.manual_seed(0)  # the same initial weights in both layouts
        model = build_model(spec, train.info.n_channels, train.info.num_classes).train().to(memory_format=LAYOUTS[layout])
        steps[layout] = (model, torch.optim.Adam(model.parameters(), lr=1e-3))
    batches = full_batches(train, args.batch_size)

    def step(layout: str, idx: torch.Tensor) -> float:
        model, optimiser = steps[layout]
        x = train.images[idx].contiguous(memory_format=LAYOUTS[layout])
        return timed_step(model, optimiser, task.loss, x, targets[idx], training_precision(precision)("cpu"))

    times: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    for i in range(args.warmup + args.batches):
        for layout in LAYOUTS:
            seconds = step(layout, batches[i % len(batches)])
            if i >= args.warmup:
                times[layout].append(seconds)
    med = {layout: statistics.median(v) for layout, v in times.items()}
    return {"median_s": med, "timed_batches": args.batches, "speedup": med["contiguous"] / med["channels_last"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = []
    for name in args.models:
        for precision in args.precisions:
            runs.append({"model": name, "precision": precision, **time_layouts(name, precision, args)})
            print(json.dumps(runs[-1]), flush=True)
    result = {
        **machine_facts(),
        "dataset": args.dataset, "batch_size": args.batch_size, "batches": args.batches, "warmup": args.warmup,
        "threads": torch.get_num_threads(), "runs": runs, "load_average_end": list(os.getloadavg()),
        "command": "python scripts/bench_train_memory_format.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
    }
    write(result, args.out)
    return 0


def write(r: dict, out: Path) -> None:
    table = "\n".join(
        f"| {run['model']} | {run['precision']} | {run['median_s']['contiguous'] * 1000:.0f} | "
        f"{run['median_s']['channels_last'] * 1000:.0f} | {run['speedup']:.2f} |" for run in r["runs"])
    speedups = [run["speedup"] for run in r["runs"]]
    write_report(out, r, f"""# Training step: channels_last against the default (contiguous) layout

Written by `scripts/bench_train_memory_format.py`: each model's training step (forward and loss under
`train.precision`, backward, Adam step) on real {r['dataset']} train batches of {r['batch_size']}, two copies of the
model with the same initial weights, one per layout, alternating batch by batch; {r['batches']} timed batches of each
after {r['warmup']} warm-up batch(es); medians, {r['threads']} torch thread(s).

| model | precision | contiguous ms / batch | channels_last ms / batch | speed-up |
|---|---|---:|---:|---:|
{table}

Speed-up from {min(speedups):.2f}x to {max(speedups):.2f}x (median {statistics.median(speedups):.2f}x). Machine:
{r['machine']}; torch CPU capability {r['cpu_capability']}; bfloat16 instructions {', '.join(r['cpu_bf16']) or 'none'};
load average at the end {r['load_average_end'][0]:.1f}. Training stays in the default layout: within a few percent
either way, channels_last is not worth a setting on this CPU. Timed with one core to this script and the other to
a training job, as the zoo and the baselines run; an informal first timing with more jobs than cores favoured
channels_last, so time it under the load you will train with.
""")


if __name__ == "__main__":
    raise SystemExit(main())
