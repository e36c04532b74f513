"""Speed benchmark: our attacks against the model's raw throughput and against peer libraries.

    python scripts/bench_speed.py --zoo ../main/models                       # the CPU target configuration
    python scripts/bench_speed.py --measures pgd_fixed --libraries ours torchattacks --n-images 32 --steps 5 --repeats 1
    python scripts/bench_speed.py --zoo models --model resnet18_native --measures battery --libraries ours torchattacks

On one model, data split, device, batch size and budget: the model's forward
and forward+backward rates in each model form (limit_*), our L-inf PGD and the
same attack in torchattacks, foolbox, ART and adv-lib (pgd_fixed), a
four-epsilon evaluation done each library's way against our battery
(pgd_4eps), Square with 1,000 queries (square), the whole standard battery
end to end (form preparation and records included) against torchattacks'
AutoAttack run once per epsilon (battery: only when named), and time against the number
of images and of steps (scale_*). Writes results/perf/<device>_<model>_<dataset>.csv
(rows of the measures re-run are replaced, others kept), a JSON sidecar and a
section of results/perf/README.md. Peers need the [compare] extra; a missing
one leaves empty rows and a note.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from fractions import Fraction
from pathlib import Path

import torch

from bench.benchmark import MEASURES, SpeedConfig, run_suite, write_results
from bench.benchmark.table import DEFAULT_MEASURES
from bench.benchmark.inputs import IF_MISSING, load_model, machine
from bench.model_forms import AUTO, FORMS
from bench.benchmark.ours import BATTERIES
from bench.benchmark.suite import LIBRARIES
from bench.config import REPO_ROOT
from bench.data import load_split


def eps_value(text: str) -> float:
    """'2/255' or 0.0078."""
    return float(Fraction(text))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = SpeedConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="pneumoniamnist")
    p.add_argument("--size", type=int, default=28, help="MedMNIST image size of the data")
    p.add_argument("--split", default="test")
    p.add_argument("--root", default=None, help="data root (default: $MEDMNIST_ROOT)")
    p.add_argument("--model", default="resnet18_28", help="a conf/model name, looked up in the zoo")
    p.add_argument("--zoo", type=Path, default=REPO_ROOT / "models")
    p.add_argument("--checkpoint", type=Path, default=None, help="a .safetensors file (card beside it) instead of the zoo")
    p.add_argument("--if-missing", choices=IF_MISSING, default="error",
                   help="when the zoo has no model: fail, train it for --train-epochs, or use random weights")
    p.add_argument("--train-epochs", type=int, default=1)
    p.add_argument("--device", default=d.device)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--n-images", type=int, default=d.n_images, help="the split's first images, repeated if more are asked")
    p.add_argument("--batch-size", type=int, default=None, help="default: all images in one batch")
    p.add_argument("--eps", type=eps_value, default=d.eps)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--rel-stepsize", type=float, default=d.rel_stepsize)
    p.add_argument("--random-start", action=argparse.BooleanOptionalAction, default=d.random_start)
    p.add_argument("--epsilons", type=eps_value, nargs="+", default=list(d.epsilons), help="pgd_4eps epsilons")
    p.add_argument("--max-queries", type=int, default=d.max_queries, help="Square's query budget per image")
    p.add_argument("--p-init", type=float, default=d.p_init)
    p.add_argument("--repeats", type=int, default=d.repeats, help="timed repeats; the median is reported")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--measures", nargs="+", default=list(DEFAULT_MEASURES), choices=MEASURES, metavar="MEASURE",
                   help=f"any of: {', '.join(MEASURES)} (default: all but battery, which runs only when named)")
    p.add_argument("--libraries", nargs="+", default=list(LIBRARIES), metavar="LIB",
                   help=f"any of: {', '.join(LIBRARIES)} (art, adv_lib also accepted)")
    p.add_argument("--forms", nargs="+", default=None, choices=list(FORMS), metavar="FORM",
                   help=f"model forms for the limit rows: {', '.join(FORMS)} (default depends on the device)")
    p.add_argument("--scale-sizes", type=int, nargs="+", default=list(d.scale_sizes))
    p.add_argument("--scale-steps", type=int, nargs="+", default=list(d.scale_steps))
    p.add_argument("--scale-libraries", nargs="+", default=list(d.scale_libraries), metavar="LIB")
    p.add_argument("--ours-battery", choices=list(BATTERIES), default=d.ours_battery,
                   help="how ours runs pgd_4eps (engine: as scripts/attack.py, nested epsilons and early stop)")
    p.add_argument("--ours-form", choices=[AUTO, *FORMS], default=d.ours_form,
                   help="the model form our attacks run (auto: the device's fastest, numerics-checked)")
    p.add_argument("--battery-override", nargs="*", default=[], metavar="KEY=VALUE",
                   help="Hydra overrides of our standard battery for the battery measure (smoke runs only: the row "
                        "says its budgets were overridden)")
    p.add_argument("--numerics", action=argparse.BooleanOptionalAction, default=d.numerics,
                   help="robust accuracy of our PGD against each model form")
    p.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=d.warmup)
    p.add_argument("--max-minutes", type=float, default=None, help="skip what is left once this much time is spent")
    p.add_argument("--out-dir", type=Path, default=REPO_ROOT / "results" / "perf")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = SpeedConfig(
        measures=tuple(args.measures), libraries=tuple(args.libraries), forms=tuple(args.forms) if args.forms else None,
        device=args.device, n_images=args.n_images, batch_size=args.batch_size, eps=args.eps, steps=args.steps,
        rel_stepsize=args.rel_stepsize, random_start=args.random_start, epsilons=tuple(args.epsilons),
        max_queries=args.max_queries, p_init=args.p_init, repeats=args.repeats, seed=args.seed,
        scale_sizes=tuple(args.scale_sizes), scale_steps=tuple(args.scale_steps),
        scale_libraries=tuple(args.scale_libraries), ours_battery=args.ours_battery, ours_form=args.ours_form, numerics=args.numerics,
        warmup=args.warmup, max_minutes=args.max_minutes, battery_overrides=tuple(args.battery_override),
    )
    split = load_split(args.dataset, args.split, args.size, args.root)
    info = split.info
    loaded = load_model(args.model, info.flag, info.size, info.n_channels, info.num_classes, args.zoo, args.seed,
                        args.checkpoint, args.if_missing, args.train_epochs, args.root, args.device)
    device_type = torch.device(args.device).type
    stem = f"{device_type}_{loaded.name}_{info.flag}"
    meta = {
        "title": stem,
        "machine": machine(args.device),
        "model": loaded.description,
        "data": f"{info.flag} {args.split} split at {info.size}x{info.size} ({len(split)} images), first {cfg.n_images} "
                f"(repeated if needed), batch {cfg.batch}",
        "settings": f"PGD L-inf eps {cfg.eps:.6g}, {cfg.steps} steps, step {cfg.rel_stepsize:g} x eps, random start "
                    f"{cfg.random_start}; pgd_4eps epsilons {', '.join(f'{e:.6g}' for e in cfg.epsilons)} (ours: "
                    f"{cfg.ours_battery} battery, model form {cfg.ours_form}); Square {cfg.max_queries} queries, p_init "
                    f"{cfg.p_init:g}; seed {cfg.seed} (timed repeats per row: the runs column)",
        "command": "python scripts/bench_speed.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
    }
    print(f"{stem}\n  machine: {meta['machine']}\n  model: {meta['model']}\n  data: {meta['data']}\n  settings: {meta['settings']}", flush=True)
    order = list(LIBRARIES) + list(FORMS)
    rows: list = []

    def save(row) -> None:  # after every row, so a killed run keeps what it measured
        rows.append(row)
        write_results(args.out_dir, stem, rows, meta, order)

    run_suite(cfg, loaded.model, split.images, split.labels, info.task, info.num_classes, on_row=save)
    print(f"wrote {args.out_dir / (stem + '.csv')} and its section of {args.out_dir / 'README.md'}")
    return rows


if __name__ == "__main__":
    main()
