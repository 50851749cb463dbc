#!/usr/bin/env bash
# The project's test command: lint, format check, then the test suite (arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

ruff check .
ruff format --check .
python -m pytest "$@"
