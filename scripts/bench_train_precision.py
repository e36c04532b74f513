"""Cost of a training step in bf16 mixed precision against float32, per batch, on one machine in one run.

    python scripts/bench_train_precision.py --threads 1          # the baselines' ResNets and every zoo family
    python scripts/bench_train_precision.py --models resnet18_28 --repeats 1 --out /tmp/precision.md

What ``train.precision=bf16`` buys (``bench/precision.py``): each model's fp32 and bf16 steps are timed alternately
batch by batch (so a shared CPU slows both alike), after a warm-up, over the full batches of one epoch of the real
train split, with the training loop's own step (``bench.train``'s loss under ``training_precision``, backward, Adam
step); medians are reported. Whether bf16 changes what a model learns is not timed here: it is measured by training
the MedMNIST baselines both ways (``results/paper/README.md``). Writes a Markdown table and a JSON sidecar.
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
from bench.models import ModelSpec, build_model
from bench.precision import PRECISIONS, training_precision

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = benchmark_parser(__doc__, "train_precision.md")
    p.add_argument("--repeats", type=int, default=1, help="timed epochs (each: every full batch once, both ways)")
    return p.parse_args(argv)


def time_model(spec: ModelSpec, args: argparse.Namespace) -> dict[str, object]:
    train = load_split(args.dataset, "train", 28, args.root)
    task = train.info.task
    torch.manual_seed(0)
    model = build_model(spec, train.info.n_channels, train.info.num_classes).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    targets = task.labels_as_targets(train.labels)
    batches = full_batches(train, args.batch_size)

    def step(name: str, idx: torch.Tensor) -> float:
        return timed_step(model, optimiser, task.loss, train.images[idx], targets[idx], training_precision(name)("cpu"))

    for i in range(args.warmup):
        for name in PRECISIONS:
            step(name, batches[i % len(batches)])
    times: dict[str, list[float]] = {name: [] for name in PRECISIONS}
    for _ in range(args.repeats):
        for idx in batches:
            for name in PRECISIONS:
                times[name].append(step(name, idx))
    med = {name: statistics.median(v) for name, v in times.items()}
    return {"median_s": med, "timed_batches": {k: len(v) for k, v in times.items()},
            "speedup": med["fp32"] / med["bf16"], "batches_per_epoch": len(batches)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {
        **machine_facts(),
        "dataset": args.dataset, "batch_size": args.batch_size, "repeats": args.repeats, "warmup": args.warmup,
        "models": {name: time_model(model_spec(name), args) for name in args.models},
        "load_average_end": list(os.getloadavg()),
        "command": "python scripts/bench_train_precision.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
    }
    write(result, args.out)
    print(json.dumps(result, indent=1))
    return 0


def write(r: dict, out: Path) -> None:
    table = "\n".join(
        f"| {name} | {m['median_s']['fp32'] * 1000:.0f} | {m['median_s']['bf16'] * 1000:.0f} | {m['speedup']:.2f} | "
        f"{m['timed_batches']['fp32']} |" for name, m in r["models"].items())
    losing = [name for name, m in r["models"].items() if m["speedup"] < 1]
    slower = (f"Slower in bf16 on this CPU (speed-up below 1): {', '.join(losing)}; train these in fp32.\n" if losing else "")
    write_report(out, r, f"""# Training step: bf16 mixed precision against float32

Written by `scripts/bench_train_precision.py`: each model's training step (forward and loss under
`train.precision`, backward, Adam step) on real {r['dataset']} train batches of {r['batch_size']}, fp32 and bf16 batches
alternating, {r['repeats']} epoch(s) of full batches timed after {r['warmup']} warm-up batch(es) of each; medians.

| model | fp32 ms / batch | bf16 ms / batch | speed-up | batches timed (each) |
|---|---:|---:|---:|---:|
{table}

Machine: {r['machine']}; torch CPU capability {r['cpu_capability']}; bfloat16 instructions
{', '.join(r['cpu_bf16']) or 'none'}; load average at the end {r['load_average_end'][0]:.1f}. On a CPU without AMX or
AVX-512 BF16 the bf16 kernels emulate the format and the speed-up shrinks or inverts: measure before choosing it.
{slower}""")


if __name__ == "__main__":
    raise SystemExit(main())
