#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh) and run the main job on the bundled Multimodal Universe sample: `aion-fast encode`
# of its DESI (real EDR spectra), Legacy Survey and Gaia (synthetic) files into ./aion-fast-embeddings/.
# Without --model it uses the bundled DEMO model (aion_fast/data/demo_model: trained on the sample, not science
# quality) and says so. Extra arguments go to `aion-fast encode` (e.g. --model DIR, --device cuda, --loader dali).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
VENV="${AION_FAST_VENV:-.venv}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"  # the sample is bundled; never reach a hub
SAMPLE=aion_fast/data/sample/mmu
set -- "$SAMPLE" --output aion-fast-embeddings --batch-size 64 "$@"
echo "+ $VENV/bin/aion-fast encode $*" >&2
exec "$VENV/bin/aion-fast" encode "$@"
