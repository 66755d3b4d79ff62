#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment .venv from requirements.txt.
# Re-running is cheap: nothing is installed when requirements.txt has not changed since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
stamp=.venv/.requirements.sha256
wanted=$(sha256sum requirements.txt | cut -d' ' -f1)

if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $($PYTHON --version) ..."
  "$PYTHON" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "Installing requirements.txt into .venv (PyTorch is large: this takes a few minutes the first time) ..."
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  echo "$wanted" > "$stamp"
fi
