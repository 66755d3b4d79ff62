#!/usr/bin/env bash
# Set up .venv if needed, then run the test suite on the CPU (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUTF8=1  # progress bars and tables print UTF-8 whatever the machine's locale
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest -q "$@"
