#!/usr/bin/env bash
# The main job on the built-in synthetic demo data, from a fresh clone:
# set up .venv, write the demo dataset, train on the CPU profile with the short `quick` schedule,
# evaluate before and after training.
# Extra arguments are Sacred config updates or named configs, e.g.  bash scripts/run_demo.sh alpnet n_steps=500
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUTF8=1  # progress bars and tables print UTF-8 whatever the machine's locale
bash scripts/setup_env.sh
export PYTHONWARNINGS=ignore::UserWarning  # Sacred's pkg_resources deprecation notice
python=.venv/bin/python
run_name=${RUN_NAME:-demo}

if [ ! -f data/DEMO/label_10.nii.gz ]; then
  $python scripts/make_demo_data.py --out data/DEMO
fi
$python train.py with demo cpu quick run_name="$run_name" "$@"
$python test.py with demo cpu run_name="$run_name" checkpoint="runs/$run_name/checkpoints/initial.pth" "$@"
$python test.py with demo cpu run_name="$run_name" "$@"
echo
echo "Dice (%) on the demo fold's query scans, before and after training:"
$python scripts/compare_evaluations.py "runs/$run_name/evaluation_fold0_initial" "runs/$run_name/evaluation_fold0"
