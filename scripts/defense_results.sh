#!/usr/bin/env bash
# The measured defense results: train every built-in defense, evaluate each (and the undefended model)
# with the standard battery plus the adaptive attacks its declaration selects, certify smoothing, run the
# corruption track (MedMNIST-C) on every one of them, then promote and render. Every step resumes: training
# reuses the zoo entry with the same settings, attacks resume from their per-sample records, certification from
# its saved certificates, the corruption track from its per-corruption records. Rerun the same command after a kill.
#
#   bash scripts/defense_results.sh                          # both datasets
#   DATASETS=breastmnist bash scripts/defense_results.sh     # one
#   CERTIFY_N=100000 bash scripts/defense_results.sh         # Cohen et al.'s n (hours per sigma on a CPU)
#   STEPS=corrupt bash scripts/defense_results.sh            # only the corruption track (minutes; models trained
#                                                            # if the zoo lacks them), then promote and render
#   DEFENSES="none jpeg" bash scripts/defense_results.sh     # only these defenses (trains only what they need;
#                                                            # smoothing = both sigmas' certify and corrupt steps)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export MEDMNIST_ROOT=${MEDMNIST_ROOT:-../shared/data/medmnist}
DATASETS=${DATASETS:-"breastmnist pneumoniamnist"}
CERTIFY_N=${CERTIFY_N:-10000}
SEED=${SEED:-0}
STEPS=${STEPS:-"attack certify corrupt"}
DEFENSES=${DEFENSES:-"none pgd_at trades bit_depth jpeg median smoothing"}
step() { [[ " $STEPS " == *" $1 "* ]]; }
wanted() { [[ " $DEFENSES " == *" $1 "* ]]; }
for d in $DEFENSES; do
  case " none pgd_at trades bit_depth jpeg median smoothing " in
    *" $d "*) ;;
    *) echo "DEFENSES: unknown defense '$d'; choose from: none pgd_at trades bit_depth jpeg median smoothing" >&2; exit 2;;
  esac
done
declare -A EPOCHS=([breastmnist]=30 [pneumoniamnist]=10)  # the undefended models' budgets (results/README.md)

for ds in $DATASETS; do
  common="dataset=$ds model=resnet18_native train.epochs=${EPOCHS[$ds]} seed=$SEED logger=none"
  # trained defenses into the zoo (the undefended backbone is trained by the first run that needs it)
  for defense in pgd_at trades; do
    if wanted $defense; then $PY scripts/train.py $common reuse=true defense=$defense; fi
  done
  if wanted smoothing; then
    for sigma in 0.12 0.25; do  # randomised smoothing's base models: Gaussian-noise training
      $PY scripts/train.py $common reuse=true defense=smoothing defense.params.sigma=$sigma
    done
  fi
  # the standard battery + adaptive attacks: the undefended model first (the trained defenses' comparison
  # and the input transforms' backbone), then the trained defenses, then the input transforms
  if step attack; then
    for defense in none pgd_at trades bit_depth jpeg median; do
      if wanted $defense; then $PY scripts/attack.py $common battery=standard defense=$defense; fi
    done
  fi
  if step certify && wanted smoothing; then  # Cohen et al.'s CERTIFY: smoothing's own certified track
    for sigma in 0.12 0.25; do
      $PY scripts/certify.py $common defense=smoothing defense.params.sigma=$sigma certify.n=$CERTIFY_N
    done
  fi
  if step corrupt; then  # the corruption track: the undefended model, every defense (corrupted images cached)
    for defense in none pgd_at trades bit_depth jpeg median; do
      if wanted $defense; then $PY scripts/corrupt.py $common defense=$defense; fi
    done
    if wanted smoothing; then
      for sigma in 0.12 0.25; do
        $PY scripts/corrupt.py $common defense=smoothing defense.params.sigma=$sigma
      done
    fi
  fi
done
$PY scripts/promote.py --include-flagged   # a defense found unreliable is a result: kept, unranked
$PY scripts/leaderboard.py
