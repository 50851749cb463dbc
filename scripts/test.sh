#!/usr/bin/env bash
# The project's test command: lint, format check, then the test suite (arguments go to pytest).
# Without arguments (the full run, as CI does) it then runs the core's suite again where the core
# runs: a fresh venv with only edgeprune[litert] and pytest, no TensorFlow (scripts/test_core.sh,
# about 1.5 minutes more).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

ruff check .
ruff format --check .
python -m pytest "$@"
if [ $# -eq 0 ]; then
  bash scripts/test_core.sh
fi
