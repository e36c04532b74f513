#!/usr/bin/env bash
# The speed benchmark on one GPU, in one call, in under 8 minutes (the parts' hard limits add up to 460 s):
# ResNet-50 at 224x224 (the 28x28 PneumoniaMNIST images upsampled inside the model: conf/model/resnet50_224.yaml),
# batch 256, writing results/perf/cuda_resnet50_224_pneumoniamnist.csv and its section of results/perf/README.md.
#
#   bash scripts/gpu_check.sh            # PYTHON=/path/to/python to choose the interpreter
#   OUT_DIR=/some/dir bash scripts/gpu_check.sh      # write the CSV, JSON and README section there instead
#   DEVICE=cpu SMOKE=1 bash scripts/gpu_check.sh     # a dry run of every part on a few images (checks the script)
#   PARTS=battery bash scripts/gpu_check.sh          # only the parts named (default: limits pgd square scale);
#                                                    # battery (issue 16: the standard battery against AutoAttack on
#                                                    # 64 images, up to 5 minutes) runs only when named
#
# If the zoo (models/) has no trained resnet50_224, part 1 trains one for TRAIN_EPOCHS (default 4; 8 s on an
# H200, test accuracy 0.864; 1 epoch gave a model predicting one class, whose robust accuracies mean nothing;
# SEED picks the zoo seed). A run of 3 epochs or fewer is flagged as a quick training for timing in the output
# and the README. If that training fails, the model has random weights, and the output says that instead. Peers missing from the environment give empty rows
# with a note. Each part has a time budget (--max-minutes: later measures are skipped, and repeats cut, with a
# note in the row) and a hard `timeout`; rows are written as they are measured, so a cut part keeps its rows.
set -uo pipefail
cd "$(dirname "$0")/.."
export MEDMNIST_ROOT="${MEDMNIST_ROOT:-../shared/data/medmnist}"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
DEVICE="${DEVICE:-cuda}"
OUT_DIR="${OUT_DIR:-results/perf}"
started=$(date +%s)
# SMOKE=1 shrinks every part to a few images, queries and steps: it checks the script, it measures nothing useful.
if [ "${SMOKE:-0}" = 1 ]; then N=8; NSQ=4; Q=20; SIZES=(4 8); STEPS=(1 2); REP=1; K=2; MISSING=random; MODEL=${MODEL:-resnet18_28}
  NB=4; BATTERY_SMOKE=(--battery-override battery.attacks.apgd_ce.params.steps=2 battery.attacks.apgd_margin.params.steps=2
                       battery.attacks.fmn_linf.params.steps=2 battery.attacks.square_linf.params.max_queries=10)
  BATTERY_LIBS=(ours)  # AutoAttack's budgets are its standard version's: too long for a dry run
else N=256; NSQ=128; Q=1000; SIZES=(156 624 2496); STEPS=(5 10 20); REP=3; K=10; MISSING=train; MODEL=${MODEL:-resnet50_224}
  NB=64; BATTERY_SMOKE=(); BATTERY_LIBS=(ours torchattacks); fi
PARTS=" ${PARTS:-limits pgd square scale} "
for p in $PARTS; do
  case " limits pgd square scale battery " in *" $p "*) ;;
    *) echo "PARTS: unknown part '$p'; choose from: limits pgd square scale battery" >&2; exit 2;; esac
done
if [ "${DEVICE%%:*}" = cuda ]; then FORMS=(torch_eager torch_channels_last torch_bn_folded torch_compile_channels_last torch_bf16)
else FORMS=(torch_eager torch_channels_last torch_compile); fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
DEVICE="$DEVICE" "$PY" - <<'EOF' || { echo "gpu_check: no usable CUDA device; nothing measured"; exit 1; }
import importlib, os, torch
if os.environ["DEVICE"].startswith("cuda"):
    assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
    print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))
for mod in ("torchattacks", "foolbox", "art", "adv_lib"):
    try:
        m = importlib.import_module(mod)
        print(f"  {mod} {getattr(m, '__version__', '?')}")
    except Exception as exc:
        print(f"  {mod}: not importable ({type(exc).__name__}): its rows will be empty")
EOF

COMMON=(--device "$DEVICE" --model "$MODEL" --if-missing "$MISSING" --train-epochs "${TRAIN_EPOCHS:-4}" --seed "${SEED:-0}" --batch-size 256 --steps "$K"
        --out-dir "$OUT_DIR")
status=0
part() {  # part NAME HARD_LIMIT_S ARGS...: run one part of the benchmark under a hard time limit (if PARTS names it)
  local name=$1 limit=$2; shift 2
  [[ "$PARTS" == *" $name "* ]] || return 0
  echo "== gpu_check part: $name (hard limit ${limit}s, $(( $(date +%s) - started ))s elapsed)"
  timeout --signal=TERM --kill-after=10 "$limit" "$PY" scripts/bench_speed.py "${COMMON[@]}" "$@"
  local rc=$?
  if [ $rc -ne 0 ]; then echo "gpu_check: part $name ended with status $rc (124: cut by its time limit)"; status=1; fi
}

# Budgets follow the parts measured on an H200 (2026-11-27: training 4 epochs + limits 70 s, pgd 100 s, square
# over 90 s with ART cut, scale over 50 s); where they
# are short, repeats are cut or measures skipped, and the rows say so.
# 1. model forms (eager, channels_last, BN folded, compiled channels_last (ours' auto form on GPUs), bf16), each
#    with the numerics check (our PGD against it). Compilation (not timed) takes most of it; so may training.
part limits 120 --n-images "$N" --repeats "$REP" --max-minutes 1.6 --measures limit_forward limit_forward_backward \
  --forms "${FORMS[@]}"
# 2. our PGD and the peers' (10 steps), and the four-epsilon evaluation (each library's way against our engine).
#    Ours runs its auto form (compiled, channels_last), compiled here once, not timed.
part pgd 120 --n-images "$N" --repeats "$REP" --max-minutes 1.5 --measures pgd_fixed pgd_4eps
# 3. Square, 1,000 queries, on 128 images, one repeat: ours, torchattacks, then ART (each of its iterations
#    also predicts on every image, so it is the slowest and goes last).
part square 150 --n-images "$NSQ" --repeats 1 --max-queries "$Q" --max-minutes 2.3 --measures square \
  --libraries ours torchattacks adversarial-robustness-toolbox
# 4. time against images (156, 624, 2,496: the test split repeated) and steps (5, 10, 20 on 256 images), one repeat.
part scale 70 --n-images "$N" --repeats 1 --max-minutes 0.9 --measures scale_images scale_steps \
  --scale-sizes "${SIZES[@]}" --scale-steps "${STEPS[@]}" --scale-libraries ours torchattacks

# 5. (only when named) the standard battery end to end against torchattacks' AutoAttack once per epsilon
#    (L-inf 1, 2, 4, 8/255), 64 images; the target: >= 2x AutoAttack and never a higher robust accuracy.
part battery 300 --n-images "$NB" --repeats 1 --measures battery --libraries "${BATTERY_LIBS[@]}" "${BATTERY_SMOKE[@]}"

echo "gpu_check: done in $(( $(date +%s) - started ))s; results in $OUT_DIR/${DEVICE%%:*}_${MODEL}_pneumoniamnist.csv"
ls -l "$OUT_DIR"/*"$MODEL"*.csv 2>/dev/null || true
exit $status
