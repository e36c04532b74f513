#!/usr/bin/env bash
# The CPU speed benchmark of issue 5, in parts, on the CPU target configuration: PneumoniaMNIST test split (624),
# ResNet-18 (28) from the zoo, PGD L-inf eps 2/255, 10 steps, one batch of 624, 2 threads. It writes
# results/perf/cpu_resnet18_28_pneumoniamnist.{csv,json} and that section of results/perf/README.md.
#
#   bash scripts/bench_cpu.sh              # about 70 minutes on a 2-core machine; ZOO=dir, PYTHON=interpreter
#
# Where a peer is slow enough that three repeats would take most of an hour (the four-epsilon loops of foolbox,
# ART and adv-lib; Square), a part runs one repeat and its rows say "median of 1". Run on an otherwise idle
# machine: every library shares the same 2 cores, and another job slows them unevenly.
set -euo pipefail
cd "$(dirname "$0")/.."
export MEDMNIST_ROOT="${MEDMNIST_ROOT:-../shared/data/medmnist}"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
ZOO="${ZOO:-models}"
started=$(date +%s)
bench() { echo "== bench_cpu: $* ($(( $(date +%s) - started ))s elapsed)"; "$PY" scripts/bench_speed.py --zoo "$ZOO" --threads 2 "$@"; }

bench --measures limit_forward limit_forward_backward --repeats 3                        # model forms, numerics
bench --measures pgd_fixed --repeats 3                                                    # ours and the 4 peers
bench --measures pgd_4eps --repeats 3 --libraries ours torchattacks                       # ours and the fastest peer
bench --measures pgd_4eps --repeats 1 --libraries foolbox adversarial-robustness-toolbox adv-lib
bench --measures square --repeats 1 --n-images 64 --libraries ours torchattacks adversarial-robustness-toolbox
bench --measures scale_images scale_steps --repeats 1 --scale-libraries ours torchattacks
echo "bench_cpu: done in $(( $(date +%s) - started ))s"
