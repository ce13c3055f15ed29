#!/usr/bin/env bash
# Set up (or update) the virtual environment .venv with aion_fast installed in editable mode.
#
#   bash scripts/setup.sh          # the package and its runtime dependencies
#   bash scripts/setup.sh --test   # plus the test extras (pytest, triton, the reference polymathic-aion, ...)
#
# Order matters: torch==2.13.0 is installed FIRST and pinned, because a bare `torch` requirement would pull a
# multi-GB CUDA build. The C++ extension is then built in place (scikit-build-core + CMake, ~15 s; the build tree
# in build/ is reused by the next run). If the compile fails the install still succeeds as pure Python; the last
# line printed lists the backends that ended up available.
#
# Environment: PYTHON (interpreter that creates the venv, default python3), AION_FAST_VENV (default .venv),
# AION_FAST_NO_EXT=1 (skip the extension on purpose).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

extras=""
for arg in "$@"; do
  case "$arg" in
    --test) extras="[test]" ;;
    *) echo "usage: bash scripts/setup.sh [--test]" >&2; exit 2 ;;
  esac
done

PYTHON="${PYTHON:-python3}"
VENV="${AION_FAST_VENV:-.venv}"
TORCH_PIN="torch==2.13.0"
# Keep in sync with [build-system] requires in pyproject.toml (installed here because the build runs without
# isolation, so that build/ stays valid between runs and rebuilds are incremental).
BUILD_REQUIRES=("scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.18" "ninja")

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# This workplace keeps the torch==2.13.0 CPU wheel in /opt/wheels (its pip config points there); keep finding it
# when that config is not read (e.g. another HOME), instead of downloading the multi-GB CUDA build from PyPI.
if [ -d /opt/wheels ] && [ -z "${PIP_FIND_LINKS:-}" ]; then
  export PIP_FIND_LINKS=/opt/wheels
fi

run() {
  echo "+ $*" >&2
  "$@"
}

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV" >&2
  run "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

echo "== installing $TORCH_PIN (CPU wheel) before anything else" >&2
run "$PY" -m pip install "$TORCH_PIN"

echo "== installing the build requirements" >&2
run "$PY" -m pip install "${BUILD_REQUIRES[@]}"

echo "== installing aion_fast$extras (editable; builds aion_fast._C)" >&2
run "$PY" -m pip install --no-build-isolation -e ".$extras" "$TORCH_PIN"

run "$PY" -c "import aion_fast, aion_fast.dispatch as b; print('aion_fast', aion_fast.__version__, \
'backends:', ', '.join(b.available_backends()), '| extension:', b.extension_error() or 'ok')"
