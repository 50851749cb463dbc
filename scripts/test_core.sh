#!/usr/bin/env bash
# The core's tests where the core runs: a fresh venv with only edgeprune[litert] and pytest (no
# TensorFlow, paramiko, pyserial, matplotlib or scipy), running every test not marked
# `tensorflow` or `host`. Fails if TensorFlow or a host library is importable there, or if any
# selected test fails. The fixture models come from tests/fixtures/ (see tests/models.py).
# VENV picks the venv directory (default .venv-core, rebuilt every run); PYTHON the interpreter
# that creates it (default python3); arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
venv=${VENV:-.venv-core}

rm -rf "$venv"
"$python" -m venv "$venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
"$venv/bin/python" -m pip install --quiet '.[litert]' pytest

# The point of the run: none of the host side is installed.
"$venv/bin/python" - <<'PY'
import importlib.util, sys
present = [m for m in ("tensorflow", "keras", "paramiko", "serial", "matplotlib", "scipy")
           if importlib.util.find_spec(m) is not None]
if present:
    sys.exit(f"test_core: the core venv has host packages installed: {', '.join(present)}")
PY

# -p no:cacheprovider: the run leaves nothing behind in the tree; the tests import edgeprune from
# the working tree (the rootdir is on sys.path), with the venv's dependencies.
"$venv/bin/python" -m pytest -p no:cacheprovider -m "not tensorflow and not host" "$@"
