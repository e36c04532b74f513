"""Profile one standard-battery run: per attack, time in the model's forward and backward passes, host work and
(on CUDA) synchronisation, so the next speed gain is chosen from data (issue 16, item 5).

    python scripts/profile_battery.py --zoo models --model resnet18_native --dataset pneumoniamnist --n-images 64

The battery runs as ``scripts/attack.py`` runs it (records written, nested epsilons, the model form ``auto``
picks), on the first --n-images test images at L-inf 1, 2, 4 and 8/255. Writes
results/perf/profile_<device>_<model>_<dataset>.md (the table, the machine, the form and the command).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import torch

from bench.benchmark.inputs import IF_MISSING, load_model, machine
from bench.benchmark.ours import standard_battery
from bench.benchmark.peers import Problem
from bench.benchmark.profile import profile_table
from bench.benchmark.suite import take
from bench.config import REPO_ROOT
from bench.data import load_split
from bench.model_forms import AUTO, FORMS

EPSILONS = ("1/255", "2/255", "4/255", "8/255")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="pneumoniamnist")
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--root", default=None, help="data root (default: $MEDMNIST_ROOT)")
    p.add_argument("--model", default="resnet18_native", help="a conf/model name, looked up in the zoo")
    p.add_argument("--zoo", type=Path, default=REPO_ROOT / "models")
    p.add_argument("--checkpoint", type=Path, default=None, help="a .safetensors file (card beside it) instead")
    p.add_argument("--if-missing", choices=IF_MISSING, default="error")
    p.add_argument("--n-images", type=int, default=64, help="the test split's first images")
    p.add_argument("--batch-size", type=int, default=128, help="the records' batch (scripts/attack.py's default)")
    p.add_argument("--epsilons", nargs="+", default=list(EPSILONS))
    p.add_argument("--form", choices=[AUTO, *FORMS], default=AUTO)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                   help="Hydra overrides of the battery (smaller budgets for a quick look; the file says so)")
    p.add_argument("--out-dir", type=Path, default=REPO_ROOT / "results" / "perf")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    split = load_split(args.dataset, "test", args.size, args.root)
    info = split.info
    loaded = load_model(args.model, info.flag, info.size, info.n_channels, info.num_classes, args.zoo, args.seed,
                        args.checkpoint, args.if_missing, 1, args.root, args.device)
    n = min(args.n_images, len(split))
    device = torch.device(args.device)
    model = loaded.model.to(device).eval()
    x, y = take(split.images, split.labels, n)  # labels as the speed benchmark passes them
    problem = Problem(model, x.to(device), y.to(device), info.task, info.num_classes, min(args.batch_size, n))
    epsilons = [float(Fraction(e)) for e in args.epsilons]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medbench-profile-") as tmp:
        robust, report = standard_battery(model, problem, epsilons, args.seed, args.form, Path(tmp) / "records",
                                          tuple(args.override), profile=True)
    total = time.perf_counter() - started
    stem = f"profile_{device.type}_{loaded.name}_{info.flag}"
    command = "python scripts/profile_battery.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    by_eps = ", ".join(f"{e}: {float(r):.3f}" for e, r in zip(args.epsilons, robust.float().mean(1)))
    lines = [
        f"# Where the time of one standard-battery run goes: {loaded.name} on {info.flag}", "",
        f"- command: `{command}`",
        f"- machine: {machine(args.device)}",
        f"- model: {loaded.description}",
        f"- data: the first {n} {info.flag} test images at {info.size}x{info.size}, batch {problem.batch_size}; "
        f"L-inf epsilons {', '.join(args.epsilons)}",
        f"- battery: {', '.join(report['attacks'])} (conf/battery/standard.yaml)"
        + (f"; overrides: {' '.join(args.override)}" if args.override else ""),
        f"- model form: {report['model_form']} (prepared in {report['form_prepare_s']} s; {report['form_note']})",
        f"- robust accuracy: {by_eps}",
        f"- end to end {total:.1f} s (form preparation included; the table's stages start after it)", "",
        "Columns: forward = time inside the model's forward calls; backward = from the start of a backward through "
        "the logits to its end at the input; sync = host waiting for queued device work (CUDA only); host = the "
        "rest of the stage (proposals, projections, criteria, bookkeeping); mean batch = samples per model call. "
        "`clean` is each batch's clean pass, `records` the per-sample records.", "",
        *profile_table(report["profile"], device.type), "",
    ]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"{stem}.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
