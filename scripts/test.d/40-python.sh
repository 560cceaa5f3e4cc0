#!/usr/bin/env bash
# Python bindings (bindings/python, a cffi extension over include/evroute.h):
# builds the wheel, installs it into a fresh virtual environment and runs
# pytest from outside the checkout against the installed package (API, threads,
# GC/leaks, asyncio, the example SSE server; the Redis tests run in
# 66-redis-bindings.sh). Then checks that a prototype drifting from the header
# fails the build.
set -euo pipefail
cd "$(dirname "$0")/../.."

source scripts/need.sh
venv="$PWD/target/py-venv"
python_venv "$venv"

echo "--- wheel contents"
"$py" - "$venv"/wheel/evroute-*.whl <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
assert any(n.startswith("evroute/_evroute") and n.endswith(".so") for n in names), names
assert "evroute/py.typed" in names, names
print("\n".join(n for n in names if n.startswith("evroute/")))
PY

echo "--- pytest (installed package, run from a scratch directory)"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
status=0
(cd "$scratch" && "$py" -m pytest -q -p no:cacheprovider --deselect "$OLDPWD/bindings/python/tests/test_redis.py" \
    "$OLDPWD/bindings/python/tests") || status=$?
# pytest exits 5 when it collected no tests: that is a failure here.
[ "$status" = 0 ] || { echo "pytest failed (exit status $status)"; exit 1; }

echo "--- mypy: the installed package's type hints"
(cd "$scratch" && "$py" -m mypy -p evroute)

echo "--- a prototype that drifts from include/evroute.h fails the build"
"$py" bindings/python/tests/drift_check.py "$scratch/drift" >"$scratch/drift.log" 2>&1 ||
    { cat "$scratch/drift.log"; exit 1; }
tail -1 "$scratch/drift.log"
echo "Python binding tests passed"
