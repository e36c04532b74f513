"""Cost of PGD adversarial training against plain training, per batch, on one machine in one run.

    python scripts/bench_adv_training.py                      # ResNet-18 (native) on BreastMNIST, batch 128, 7 steps
    python scripts/bench_adv_training.py --repeats 2 --threads 2 --out /tmp/adv.md

A PGD-AT step is ``steps`` input-gradient passes (crafting) plus one ordinary
training step, so its ideal cost is ``(steps + 1) x`` a plain step; the ratio

    pgd_at_batch / ((steps + 1) * plain_batch)

says how far the implementation is from that (target: at most 1.2; below 1 is
possible because crafting skips parameter gradients and the optimiser). Plain
and PGD-AT batches are timed alternately (so a shared CPU slows both alike),
after a warm-up, over the full batches of one epoch of the real train split,
and medians are reported. ``naive`` times the crafting a first attempt would
write (train mode, parameter gradients computed by ``loss.backward()``), to
show what the eval-mode, input-only crafting saves. Writes a Markdown table
and a JSON sidecar.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.attacks.threat import project, random_start
from bench.benchmark.inputs import machine
from bench.benchmark.report import write_report
from bench.config import REPO_ROOT
from bench.data import load_split
from bench.defenses.training import training_method
from bench.models import ModelSpec, build_model

SPEC = ModelSpec("resnet18_native", "resnet18", "native")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="breastmnist")
    p.add_argument("--root", default=None, help="data root (default: $MEDMNIST_ROOT)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eps", default="4/255")
    p.add_argument("--steps", type=int, default=7, help="PGD steps per batch (conf/defense/pgd_at.yaml: 7)")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs (each: every full batch once, both ways)")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches of each kind first")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-naive", action="store_true", help="skip timing the naive crafting")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "perf" / "adv_training.md")
    return p.parse_args(argv)


def naive_loss(method, model, x, y):
    """PGD-AT as often first written: crafting in train mode, ``loss.backward()`` filling parameter gradients too."""
    x_adv = (x + random_start(x, method.eps, "linf", method.generator)).clamp(0, 1)
    for _ in range(method.steps):
        x_adv = x_adv.detach().requires_grad_(True)
        method.task.loss(model(x_adv), y, "sum").backward()
        x_adv = (x + project(x_adv.detach() + method.step_size * x_adv.grad.sign() - x, method.eps, "linf")).clamp(0, 1)
    model.zero_grad(set_to_none=True)
    return method.task.loss(model(x_adv.detach()), y)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train = load_split(args.dataset, "train", 28, args.root)
    task = train.info.task
    torch.manual_seed(0)
    model = build_model(SPEC, train.info.n_channels, train.info.num_classes)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    method = training_method("pgd_at", task, {"eps": args.eps, "steps": args.steps}, seed=0)
    targets = task.labels_as_targets(train.labels)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    batches = [order[i : i + args.batch_size] for i in range(0, len(order) - args.batch_size + 1, args.batch_size)]

    def plain(model, x, y):
        return task.loss(model(x), y)

    kinds = {"plain": plain, "pgd_at": method.loss}
    if not args.no_naive:
        kinds["naive_pgd_at"] = lambda m, x, y: naive_loss(method, m, x, y)

    def step(loss_fn, idx) -> float:
        x, y = train.images[idx], targets[idx]
        started = time.perf_counter()
        model.train()
        loss = loss_fn(model, x, y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return time.perf_counter() - started

    at_start = machine("cpu")
    for i in range(args.warmup):
        for fn in kinds.values():
            step(fn, batches[i % len(batches)])
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.repeats):
        for idx in batches:  # one epoch's full batches, the kinds alternating batch by batch
            for name, fn in kinds.items():
                times[name].append(step(fn, idx))
    med = {k: statistics.median(v) for k, v in times.items()}
    ideal = (args.steps + 1) * med["plain"]
    result = {
        "machine": at_start,
        "dataset": args.dataset, "model": SPEC.name, "batch_size": args.batch_size, "eps": args.eps, "steps": args.steps,
        "batches_per_epoch": len(batches), "repeats": args.repeats, "warmup": args.warmup,
        "median_s": med, "timed_batches": {k: len(v) for k, v in times.items()},
        "ratio": med["pgd_at"] / ideal,
        "naive_ratio": med["naive_pgd_at"] / ideal if "naive_pgd_at" in med else None,
        "load_average_end": list(__import__("os").getloadavg()),
        "command": "python scripts/bench_adv_training.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
    }
    write(result, args.out)
    print(json.dumps(result, indent=1))
    return 0


def write(r: dict, out: Path) -> None:
    steps, med, plain = r["steps"], r["median_s"], r["median_s"]["plain"]
    rows = [("plain training step", med["plain"], 1.0, "1")]
    rows.append((f"PGD-AT step ({steps} steps, eps {r['eps']})", med["pgd_at"], med["pgd_at"] / plain, f"{steps + 1}"))
    if "naive_pgd_at" in med:
        rows.append(("naive PGD-AT step (train mode, parameter grads)", med["naive_pgd_at"], med["naive_pgd_at"] / plain, f"{steps + 1}"))
    table = "\n".join(f"| {name} | {s * 1000:.0f} | {x:.2f} | {ideal} |" for name, s, x, ideal in rows)
    naive = f" (naive crafting: {r['naive_ratio']:.2f})" if r.get("naive_ratio") else ""
    write_report(out, r, f"""# Adversarial training cost

Written by `scripts/bench_adv_training.py`: {r['model']} on real {r['dataset']} train batches of {r['batch_size']}
(the {r['batches_per_epoch']} full batches of one epoch, {r['repeats']} epochs timed after {r['warmup']} warm-up batches, plain
and PGD-AT batches alternating); medians.

| step | median ms / batch | x plain | ideal x plain |
|---|---:|---:|---:|
{table}

**ratio = pgd_at_batch / ((steps + 1) * plain_batch) = {r['ratio']:.2f}** (target <= 1.2){naive}.

Below 1 is expected on a CPU: a crafting pass (`bench/defenses/training.py`, `pgd_linf`) runs in eval mode
with parameters frozen and takes only the input gradient (`torch.autograd.grad`), so it skips the
weight-gradient convolutions, which are most of a training backward here, and the optimiser step. The naive
row crafts as a first attempt would (train mode, `loss.backward()` filling parameter gradients, which also
pollutes BatchNorm's running statistics): it costs the full (steps + 1) plain steps.

Machine: {r['machine']}; load average at the end {r['load_average_end'][0]:.1f}.
""")


if __name__ == "__main__":
    raise SystemExit(main())
