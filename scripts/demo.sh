#!/usr/bin/env bash
# Install qgadash into .venv (creating it if needed) and run the simulated demo fleet.
# Usage: bash scripts/demo.sh [N]      the dashboard in this terminal
#        bash scripts/demo.sh serve    the same dashboard in a browser (prints the URL)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -q && $SUDO apt-get install -y -q python3-venv
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q .
if [ "${1:-}" = serve ]; then
  exec .venv/bin/qgadash --demo 24 serve
fi
exec .venv/bin/qgadash --demo "${1:-24}"
