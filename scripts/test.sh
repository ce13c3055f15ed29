#!/usr/bin/env bash
# Set up .venv with the test extras (scripts/setup.sh --test) and run the test suite, base-size comparisons with
# the reference included (-m "not gpu and not heavy": a few minutes more than pyproject's default "not slow and not gpu";
# `-m heavy` runs the multi-minute checks left out here).
# Arguments replace that default and go to pytest, e.g. `bash scripts/test.sh -m "not slow" tests/model`.
#
# Fails when the C++ extension did not build (the cpp tests would only be skipped), unless AION_FAST_NO_EXT=1
# asks for a pure-Python install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh --test
PY="${AION_FAST_VENV:-.venv}/bin/python"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"  # tests never reach the network

if [ "${AION_FAST_NO_EXT:-0}" != "1" ]; then
  echo "+ check that aion_fast._C loads" >&2
  "$PY" -c "import sys, aion_fast.dispatch as b; b.load_extension() or sys.exit('aion_fast._C did not build or \
load: ' + str(b.extension_error()) + ' (set AION_FAST_NO_EXT=1 to test the pure-Python install)')"
fi

if [ "$#" -eq 0 ]; then
  set -- -m "not gpu and not heavy" --durations=20
fi
echo "+ $PY -m pytest -q $*" >&2
set +e
"$PY" -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "ERROR: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
