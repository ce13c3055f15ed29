#!/usr/bin/env bash
# Rebuild the bundled DEMO model (aion_fast/data/demo_model/), the main job's default checkpoint, from the bundled
# MMU sample, on CPU, in about 5-10 minutes on 2 cores:
#   1. small codecs:  aion-fast train-codec demo          (image + spectrum codecs trained, scalar codecs fitted)
#   2. tokens:        aion-fast tokenize                   (the sample through those codecs)
#   3. transformer:   python -m aion_fast.train --config configs/aion-demo.yaml   (width 48, 2+2 blocks, 300 steps)
# 27 objects cannot teach astronomy: the result exercises every trained path, it is NOT AION-1 science quality.
#
#   bash scripts/train_demo.sh            # needs the venv of scripts/setup.sh --test (pyyaml)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${AION_FAST_VENV:-.venv}/bin/python"
SAMPLE=(aion_fast/data/sample/mmu/*/healpix=0/001-of-001.hdf5)
rm -rf runs/demo-codecs runs/demo-tokens runs/aion-demo
"$PY" -m aion_fast.cli train-codec demo --output runs/demo-codecs --steps 120 --seed 0
"$PY" -m aion_fast.cli tokenize "${SAMPLE[@]}" --codecs runs/demo-codecs --output runs/demo-tokens
"$PY" -m aion_fast.train --config configs/aion-demo.yaml
rm -rf aion_fast/data/demo_model
cp -r runs/aion-demo/export aion_fast/data/demo_model
rm -f aion_fast/data/demo_model/codecs/DEMO_CODECS.md
cp runs/aion-demo/metrics.jsonl aion_fast/data/demo_model/training-metrics.jsonl
echo "demo model written to aion_fast/data/demo_model ($(du -sh aion_fast/data/demo_model | cut -f1))"
