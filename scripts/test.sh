#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: installs the real peers (qemu-ga,
# QEMU, sshd, libvirtd, a kernel and busybox for the test guests), a virtualenv with
# the test extras, then lint, types and pytest. Usage: bash scripts/test.sh [PYTEST ARGS]
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(
  qemu-guest-agent qemu-system-x86 qemu-utils openssh-server openssh-client socat sudo
  busybox-static linux-image-amd64 e2fsprogs cpio kmod iproute2 tmux procps
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients python3-venv
)
missing=()
for pkg in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
VENV=${QGADASH_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[test]'

"$VENV/bin/ruff" check qgadash
"$VENV/bin/mypy" --strict qgadash
"$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
