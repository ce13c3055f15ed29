#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh) and run the demo: encode a bundled sample and print a summary.
# Extra arguments go to `aion-fast demo`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
VENV="${AION_FAST_VENV:-.venv}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"  # the demo runs on bundled data; never reach a hub
echo "+ $VENV/bin/aion-fast demo $*" >&2
exec "$VENV/bin/aion-fast" demo "$@"
