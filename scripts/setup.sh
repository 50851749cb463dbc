#!/usr/bin/env bash
# Create .venv in the repository and install edgeprune into it, editable, with the extras asked
# for: `bash scripts/setup.sh [EXTRAS]`, EXTRAS comma-separated, default litert,host,test,fleet
# (what the tests need: TensorFlow, paramiko, Flower, ...). scripts/demo.sh asks for litert
# only: the core and the LiteRT interpreter, all the demo runs.
# Idempotent: when setup.cfg and pyproject.toml have not changed since the last successful install
# and the extras asked for were installed then, it only checks that the venv is there. Extras
# installed once stay (a later run installs the union).
# PYTHON selects the interpreter that creates the venv (default: python3, 3.10 or newer).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
extras=${1:-litert,host,test,fleet}
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
# The stamp: "<hash of setup.cfg and pyproject.toml> <extras installed>".
had_hash="" had_extras=""
if [ -f "$stamp" ]; then
  read -r had_hash had_extras <"$stamp" || true
fi
union=$(printf '%s,%s' "$had_extras" "$extras" | tr ',' '\n' | sed '/^$/d' | sort -u | paste -sd, -)
if [ "$had_hash" = "$wanted" ] && [ "$union" = "$had_extras" ]; then
  exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
"$venv/bin/python" -m pip install --quiet -e ".[$union]"
echo "$wanted $union" >"$stamp"
