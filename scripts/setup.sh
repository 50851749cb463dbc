#!/usr/bin/env bash
# Create .venv in the repository and install edgeprune into it, editable, with every extra
# (litert runtime, host tools, test tools). Idempotent: when setup.cfg and pyproject.toml have not
# changed since the last successful install, it only checks that the venv is there.
# PYTHON selects the interpreter that creates the venv (default: python3, 3.10 or newer).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
venv=.venv
stamp=$venv/.edgeprune-install

if [ ! -x "$venv/bin/python" ]; then
  if ! "$python" -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 10))'; then
    echo "setup: $python must be Python >= 3.10 with the venv module" \
      "(on Debian/Ubuntu: apt-get install python3-venv)" >&2
    exit 1
  fi
  "$python" -m venv "$venv"
fi

wanted=$(cat setup.cfg pyproject.toml | "$venv/bin/python" -c \
  'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
"$venv/bin/python" -m pip install --quiet -e '.[litert,host,test,fleet]'
echo "$wanted" > "$stamp"
