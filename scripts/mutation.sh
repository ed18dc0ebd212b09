#!/usr/bin/env bash
# Mutation testing of the safety modules (the list and the tests are [tool.mutmut] in
# pyproject.toml; docs/testing.md says how to read the result). Installs mutmut into the
# virtualenv, runs it with one worker (the machine is shared), prints the score per module
# and every mutant that was not killed. Not part of .ci/run: a full run takes long; run it
# before changing those modules. Results are cached in mutants/: a second run tests only
# mutants of functions that changed (and the names given).
#
# Usage: bash scripts/mutation.sh [--head] [MUTANT_NAME_OR_GLOB]...
#   QGADASH_MUTATION_CHILDREN=2  workers (default 1: the machine is shared)
#   --head   test the last commit, in a copy under $QGADASH_MUTATION_DIR (default
#            /tmp/qgadash-mutation), not this working tree: for a checkout others edit.
#   e.g.     bash scripts/mutation.sh 'qgadash.fleet.guard.*'
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

VENV=${QGADASH_VENV:-.venv}
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
VENV=$(cd "$VENV" && pwd)
if ! "$VENV/bin/python" -c 'import mutmut, pytest, textual' 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[test,mutation]'
fi

if [ "${1:-}" = "--head" ]; then
  shift
  WORK=${QGADASH_MUTATION_DIR:-/tmp/qgadash-mutation}
  mkdir -p "$WORK"
  # A fresh copy of the commit beside the cached mutants/; -m: files are newer than the
  # cached mutants, so mutmut re-reads them (unchanged functions keep their results).
  find "$WORK" -mindepth 1 -maxdepth 1 ! -name mutants -exec rm -rf {} +
  git -C "$REPO" archive HEAD | tar -x -m -C "$WORK"
  echo "== mutation testing of $(git -C "$REPO" rev-parse --short HEAD) in $WORK"
  cd "$WORK"
fi

status=0
"$VENV/bin/mutmut" run --max-children "${QGADASH_MUTATION_CHILDREN:-1}" "$@" || status=$?

"$VENV/bin/python" - <<'PY'
"""The score per module: killed (and timed out) out of every mutant that was tested."""
import json
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

rows = []
for meta in sorted(Path("mutants").rglob("*.py.meta")):
    data = json.loads(meta.read_text())
    counts = Counter(status_by_exit_code[c] for c in data["exit_code_by_key"].values())
    module = str(meta.relative_to("mutants"))[: -len(".meta")]
    rows.append((module, counts))
print()
print(f"{'module':32} {'mutants':>7} {'killed':>7} {'timeout':>7} {'survived':>8} "
      f"{'no tests':>8} {'other':>6} {'score':>7}")
totals: Counter[str] = Counter()
for module, counts in rows:
    totals.update(counts)
for module, counts in [*rows, ("all", totals)]:
    killed, timeout = counts["killed"], counts["timeout"]
    survived, no_tests = counts["survived"], counts["no tests"]
    other = sum(counts.values()) - killed - timeout - survived - no_tests
    tested = sum(counts.values()) - counts["not checked"] - counts["skipped"]
    score = f"{100 * (killed + timeout) / tested:.1f} %" if tested else "-"
    print(f"{module:32} {sum(counts.values()):7} {killed:7} {timeout:7} {survived:8} "
          f"{no_tests:8} {other:6} {score:>7}")
PY
echo
echo "not killed (mutmut show NAME for the change; docs/testing.md lists the harmless ones):"
"$VENV/bin/mutmut" results | sed 's/^ *//' | sort
exit "$status"
