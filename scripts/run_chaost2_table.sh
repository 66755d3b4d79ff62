#!/usr/bin/env bash
# The first CHAOST2 table (docs/RESULTS.md#chaost2): superpixel self-supervision under one CPU
# profile for every model, all five folds, trained and tested fold by fold, two runs at a time
# with one torch thread each (the fastest use of a 2-core machine; see RESULTS.md).
#
#   bash scripts/run_chaost2_table.sh                  # everything (45 trainings)
#   bash scripts/run_chaost2_table.sh psmnet alpnet    # only these models (setting 1 and 2 jobs)
#
# Finished folds are skipped (scripts/run_folds.py), so an interrupted table resumes where it
# stopped. Each fold's log goes to runs/logs/; tables: scripts/summarize_folds.py (commands in
# RESULTS.md). Environment: DATA_ROOT (default ../shared/data), JOBS (parallel runs, default 2),
# EXTRA (config updates added to every run, e.g. EXTRA="n_steps=2400 runs_root=runs/steps2400";
# a run folder copied there first is extended from its checkpoint instead of trained anew).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUTF8=1 OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore::UserWarning
bash scripts/setup_env.sh

# The profile: `cpu` (ResNet-18 trunk, 128 px, 1200 steps, lr 1e-2, class weights [1, 1]) with
# bf16 autocast (1.7x faster steps on this machine's AVX512-BF16 CPU; prototype arithmetic stays
# in float32) and a validation point every 200 steps for the learning curves.
profile="cpu precision=bf16 validate_every=200 data_root=${DATA_ROOT:-../shared/data} derived_root=data/derived ${EXTRA:-}"
models=("${@:-psmnet alpnet panet psm_only mcam_only}")
read -r -a models <<< "${models[*]}"
wanted() { [[ " ${models[*]} " == *" $1 "* ]]; }

jobs() {
    # Setting 1, PSMnet and SSL-ALPNet first (the comparison the table is for), fold by fold.
    for fold in 0 1 2 3 4; do
        for model in psmnet alpnet; do wanted "$model" && echo "$fold setting1 $model"; done
    done
    for fold in 0 1 2 3 4; do wanted panet && echo "$fold setting1 panet"; done
    # Setting 2: one model per organ group (0: liver + spleen, 1: kidneys).
    for fold in 0 1 2 3 4; do
        for group in 0 1; do
            for model in psmnet alpnet; do wanted "$model" && echo "$fold setting2 label_group=$group $model"; done
        done
    done
    # PSMnet ablations, setting 1.
    for fold in 0 1 2 3 4; do
        for model in psm_only mcam_only; do wanted "$model" && echo "$fold setting1 $model"; done
    done
}

mkdir -p runs/logs
run_job() {  # "<fold> <named configs / updates ...>"
    local fold=$1; shift
    local log="runs/logs/$(echo "$* ${EXTRA:-}" | tr -s ' =/' '_' | sed 's/_$//')_fold$fold.log"
    echo "start  fold $fold: $* -> $log"
    .venv/bin/python scripts/run_folds.py --folds "$fold" -- with chaost2 "$@" $profile > "$log" 2>&1 \
        && echo "done   fold $fold: $* ($(grep -o 'train [0-9]* s, test [0-9]* s' "$log" || echo 'already done'))" \
        || { echo "FAILED fold $fold: $* (see $log)"; return 1; }
}
export -f run_job
export profile EXTRA
jobs | xargs -P "${JOBS:-2}" -L 1 bash -c 'run_job "$@"' _
