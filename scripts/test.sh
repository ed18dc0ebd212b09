#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: installs the real peers (qemu-ga,
# QEMU, sshd, libvirtd, a kernel and busybox for the test guests, Prometheus and a
# headless Chromium for the exporter and the browser dashboard), a virtualenv with
# the test extras, then lint, types and pytest; then the fast tests on every other supported
# Python found here (pyenv's too). Usage: bash scripts/test.sh [PYTEST ARGS]
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(
  qemu-guest-agent qemu-system-x86 qemu-utils openssh-server openssh-client socat sudo
  busybox-static linux-image-amd64 e2fsprogs cpio kmod iproute2 tmux procps
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients python3-venv
  prometheus chromium
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

# A virtualenv with the test extras, made with interpreter $1 in directory $2.
make_venv() {
  [ -x "$2/bin/python" ] || "$1" -m venv "$2"
  "$2/bin/python" -m pip install -q --upgrade pip
  "$2/bin/python" -m pip install -q -e '.[test]'
}

# An interpreter for Python $1 (e.g. 3.12): on PATH or installed by pyenv. Each candidate
# is run, because a pyenv shim exists for versions that are not active and then fails.
find_python() {
  local candidate
  for candidate in "$(command -v "python$1" || true)" \
    $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$1".*/bin/"python$1" 2>/dev/null | sort -V -r); do
    if [ -n "$candidate" ] && [ "$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$1" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

PY=${PYTHON:-python3}
VENV=${QGADASH_VENV:-.venv}
make_venv "$PY" "$VENV"
MAIN=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# The tests and benchmarks are code too: the same lint and strict types as the product
# (mypy keeps its cache in .mypy_cache: ~55 s cold on a loaded 2-core machine, ~2 s warm).
"$VENV/bin/ruff" check qgadash tests bench
"$VENV/bin/mypy" --strict qgadash tests bench
failed=()
echo "== Python $MAIN: pytest $*"
# --durations: the slowest tests at the end of the log, to keep the suite's time in view.
"$VENV/bin/python" -m pytest -p no:cacheprovider --durations=25 "$@" || failed+=("Python $MAIN")

# The fast parts (no real peer: unit, the simulator, the dashboard) on every other
# supported Python this machine has, each in its own virtualenv (.venv-3.12, ...): the
# package says >=3.11 and operators' jump boxes run Debian 13 (3.13), Ubuntu 24.04 (3.12).
# Only on a whole run: pytest arguments (a developer's narrow run) go to the main Python.
# What differs between Python versions here is asyncio, signals and Textual's focus:
# the unit tests, the CLI's freeze and signal paths as real processes, and the
# dashboard's pilot and snapshot tests. The rest runs once, on the main Python (CI time).
FAST=(
  tests/unit
  tests/integration/test_freeze_safety.py
  tests/ui/test_snapshots.py tests/ui/test_view_units.py tests/ui/test_operator_screen.py
  -m "not real_agent and not real_sshd and not libvirt and not guest"
)
# The other versions run side by side (one process each: the machine's two cores), each
# with its own pytest temporary directory and log, printed when both are done.
extra_logs=()
extra_pids=()
extra_versions=()
for version in ${QGADASH_EXTRA_PYTHONS-3.11 3.12 3.13}; do
  [ "$version" = "$MAIN" ] && continue
  if (($#)); then
    echo "== Python $version: skipped (pytest arguments given: they run on Python $MAIN only)"
    continue
  fi
  if ! interpreter=$(find_python "$version"); then
    echo "== Python $version: skipped (not on this machine)"
    continue
  fi
  make_venv "$interpreter" ".venv-$version"
  log=$(mktemp -t "qgadash-py$version.XXXXXX.log")
  base=$(mktemp -d -t "qgadash-py$version.XXXXXX")
  echo "== Python $version ($interpreter): the fast tests, started (log: $log)"
  ".venv-$version/bin/python" -m pytest -p no:cacheprovider --basetemp "$base/tmp" "${FAST[@]}" \
    >"$log" 2>&1 &
  extra_pids+=("$!")
  extra_logs+=("$log")
  extra_versions+=("$version")
done
for i in "${!extra_pids[@]}"; do
  status=0
  wait "${extra_pids[$i]}" || status=$?
  echo "== Python ${extra_versions[$i]}: the fast tests"
  cat "${extra_logs[$i]}"
  ((status == 0)) || failed+=("Python ${extra_versions[$i]}")
done

if ((${#failed[@]})); then
  echo "tests failed on: ${failed[*]}" >&2
  exit 1
fi
