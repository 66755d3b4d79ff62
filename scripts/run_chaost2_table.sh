#!/usr/bin/env bash
# The CHAOST2 table (docs/results/chaost2.md): superpixel self-supervision under one CPU profile for
# every model, all five folds, trained and tested fold by fold, two runs at a time with one torch
# thread each (the fastest use of a 2-core machine; see RESULTS.md).
#
#   bash scripts/run_chaost2_table.sh                       # everything (100 trainings)
#   bash scripts/run_chaost2_table.sh psmnet alpnet         # only these rows (both settings)
#   FOLDS="2 3" bash scripts/run_chaost2_table.sh psmnet     # only these folds
#   EXTEND_TO=6000 bash scripts/run_chaost2_table.sh psmnet  # then continue these rows to 6000 steps
#
# Rows: psmnet, alpnet, panet, psm_only, mcam_only, universeg in Settings 1 and 2; in Setting 1 also
# psmnet_q2s (MCAM with query-to-support softmax attention, `mcam_query_to_support`) and
# psmnet_original_recipe (PSMnet's own losses: cross-entropy only with class weights [0.05, 1]).
# Finished folds are skipped and interrupted ones resume (scripts/run_sweep.py), so an interrupted
# table goes on where it stopped. Each run's log goes to <run folder>/sweep.log; tables:
# scripts/summarize_folds.py (commands in RESULTS.md); scripts/record_runs.py keeps finished runs
# without their weights in docs/records. Environment: DATA_ROOT (default
# ../shared/data), FOLDS (default "0 1 2 3 4"), JOBS (parallel runs, default 2), SWEEP_OPTIONS (e.g. --dry-run), STEPS
# (training steps, default 3000, RESULTS.md), EXTRA (config updates added to every run, e.g.
# EXTRA="seed=7"), EXTEND_TO (after the table, its rows' runs continued from their last checkpoints
# to this many steps in new runs <prefix>_steps<N>_fold<k>, scripts/extend_runs.py: PSMnet's curve
# still rises at 3000 steps, docs/results/chaost2.md#learning-curves; runs under runs/).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUTF8=1 OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore::UserWarning
bash scripts/setup_env.sh

# The profile: `cpu` (ResNet-18 trunk from scratch, 128 px, lr 1e-2, class weights [1, 1], the
# alignment loss for every model), fp32 as the originals, a validation point every 200 steps for
# the learning curves.
profile="cpu n_steps=${STEPS:-3000} validate_every=200 data_root=${DATA_ROOT:-../shared/data} derived_root=data/derived ${EXTRA:-}"
rows=("${@:-psmnet alpnet panet psm_only mcam_only universeg psmnet_q2s psmnet_original_recipe}")
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

# Fold-major (scripts/run_sweep.py), so that a table stopped early has every row on the same folds:
# in each fold, Setting 1 (PSMnet and SSL-ALPNet first, the comparison the table is for), then
# Setting 2 (one model per organ group, 0: liver + spleen, 1: kidneys).
# The continued runs (EXTEND_TO): the same rows, named <row>_steps<N>, with n_steps=<N>.
table=(); prefixes=(); extended=()
add_row() {  # <settings and group> <run prefix> <row>
    table+=(--row "$1 $(configs_of "$3")")
    prefixes+=("runs/CHAOST2_$2_$3")
    extended+=(--row "$1 $(configs_of "$3") model_label=$3_steps${EXTEND_TO:-} n_steps=${EXTEND_TO:-}")
}
for row in psmnet alpnet psm_only mcam_only psmnet_q2s panet psmnet_original_recipe universeg; do
    wanted "$row" && add_row setting1 setting1 "$row"
done
for row in psmnet alpnet psm_only mcam_only panet universeg; do
    for group in 0 1; do wanted "$row" && add_row "setting2 label_group=$group" "setting2_group$group" "$row"; done
done
sweep() {
    # shellcheck disable=SC2086  # $profile, $FOLDS and $SWEEP_OPTIONS are lists of arguments
    .venv/bin/python scripts/run_sweep.py --cpu-workers "${JOBS:-2}" --threads-per-worker 1 --folds ${FOLDS:-0 1 2 3 4} \
        ${SWEEP_OPTIONS:-} "$@" -- with chaost2 $profile
}
if [[ -n "${EXTEND_TO:-}" && " ${EXTRA:-} " == *" runs_root="* ]]; then
    echo "error: EXTEND_TO continues the runs under runs/; EXTRA sets another runs_root (${EXTRA})" >&2
    exit 2
fi
sweep "${table[@]}"
if [[ -n "${EXTEND_TO:-}" ]]; then
    if [[ " ${SWEEP_OPTIONS:-} " != *" --dry-run "* ]]; then  # a dry run copies nothing
        # shellcheck disable=SC2086
        .venv/bin/python scripts/extend_runs.py "${prefixes[@]}" --suffix "steps$EXTEND_TO" --folds ${FOLDS:-0 1 2 3 4}
    fi
    sweep "${extended[@]}"
fi
