#!/usr/bin/env bash
# The CHAOST2 table (docs/RESULTS.md#chaost2): superpixel self-supervision under one CPU profile for
# every model, all five folds, trained and tested fold by fold, two runs at a time with one torch
# thread each (the fastest use of a 2-core machine; see RESULTS.md).
#
#   bash scripts/run_chaost2_table.sh                       # everything (85 trainings)
#   bash scripts/run_chaost2_table.sh psmnet alpnet         # only these rows (both settings)
#
# Rows: psmnet, alpnet, panet, psm_only, mcam_only in Settings 1 and 2; in Setting 1 also
# psmnet_q2s (MCAM with query-to-support softmax attention, `mcam_query_to_support`) and
# psmnet_original_recipe (PSMnet's own losses: cross-entropy only with class weights [0.05, 1]).
# Finished folds are skipped (scripts/run_folds.py), so an interrupted table resumes where it
# stopped. Each fold's log goes to runs/logs/; tables: scripts/summarize_folds.py (commands in
# RESULTS.md). Environment: DATA_ROOT (default ../shared/data), JOBS (parallel runs, default 2),
# STEPS (training steps, default 3000: where the validation curves flatten, RESULTS.md), EXTRA
# (config updates added to every run, e.g. EXTRA="runs_root=runs/other").
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUTF8=1 OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore::UserWarning
bash scripts/setup_env.sh

# The profile: `cpu` (ResNet-18 trunk from scratch, 128 px, lr 1e-2, class weights [1, 1], the
# alignment loss for every model), fp32 as the originals, a validation point every 200 steps for
# the learning curves.
profile="cpu n_steps=${STEPS:-3000} validate_every=200 data_root=${DATA_ROOT:-../shared/data} derived_root=data/derived ${EXTRA:-}"
rows=("${@:-psmnet alpnet panet psm_only mcam_only psmnet_q2s psmnet_original_recipe}")
read -r -a rows <<< "${rows[*]}"
wanted() { [[ " ${rows[*]} " == *" $1 "* ]]; }
# row -> named config and updates
configs_of() {
    case $1 in
        psmnet_q2s) echo "mcam_query_to_support" ;;
        psmnet_original_recipe) echo "psmnet loss_recipe=original class_weights=[0.05,1.0] model_label=psmnet_original_recipe" ;;
        *) echo "$1" ;;
    esac
}

jobs() {
    # Fold-major, so that a table stopped early has every row on the same folds: in each fold,
    # Setting 1 (PSMnet and SSL-ALPNet first, the comparison the table is for), then Setting 2
    # (one model per organ group, 0: liver + spleen, 1: kidneys).
    for fold in 0 1 2 3 4; do
        for row in psmnet alpnet psm_only mcam_only psmnet_q2s panet psmnet_original_recipe; do
            wanted "$row" && echo "$fold setting1 $(configs_of "$row")"
        done
        for row in psmnet alpnet psm_only mcam_only panet; do
            for group in 0 1; do wanted "$row" && echo "$fold setting2 label_group=$group $(configs_of "$row")"; done
        done
    done
}

mkdir -p runs/logs
run_job() {  # "<fold> <named configs / updates ...>"
    local fold=$1; shift
    local log="runs/logs/$(echo "$* ${EXTRA:-}" | tr -s ' =/,[]' '_' | sed 's/_$//')_fold$fold.log"
    echo "start  fold $fold: $* -> $log"
    .venv/bin/python scripts/run_folds.py --folds "$fold" -- with chaost2 "$@" $profile > "$log" 2>&1 \
        && echo "done   fold $fold: $* ($(grep -o 'train [0-9]* s, test [0-9]* s' "$log" || echo 'already done'))" \
        || { echo "FAILED fold $fold: $* (see $log)"; return 1; }
}
export -f run_job
export profile EXTRA
jobs | xargs -P "${JOBS:-2}" -L 1 bash -c 'run_job "$@"' _
