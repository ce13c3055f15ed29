#!/usr/bin/env bash
# One command for a lent GPU: prove aion_fast's GPU paths and measure them, in under 8 minutes on one H100/H200.
#
#   bash scripts/gpu_check.sh [OUT_DIR] [--dry-run]
#
# OUT_DIR defaults to $OUT (the device tool's result folder), else ./gpu-check. Uses the python on PATH (or
# $PYTHON): the machine's own torch (no pin, no network). Optional: AION_FAST_WHEELS=DIR of carried wheels (the
# reference polymathic-aion and the build requirements, README "GPU check"), installed with --no-index first.
#
# Steps (scripts/gpu_check.py, each in its own process under `timeout`; a failure or time-out is recorded and the
# run goes on): versions, wheels, build (pip install --no-build-isolation --no-deps -e .), extension (aion_fast._C
# with CUDA, aion_fast.kernels imports), tests_kernels and tests_gpu (pytest on CUDA), op_probes (each Triton op vs
# the PyTorch reference on the device; GB/s vs copy bandwidth), encode_compare (bundled sample: tokens and
# embeddings on the GPU in fp32 and bf16 vs the CPU), bench_encode, bench_train, bench_int8.
# Results: OUT_DIR/steps/<step>.json, OUT_DIR/summary.json, OUT_DIR/summary.md, OUT_DIR/gpu_check.log.
# --dry-run runs the same logic on the CPU with tiny sizes (no build; pytest collects only): tested in CI.
# GPU_CHECK_ONLY=step,step runs those steps only (the summary then lists just them).
# Exit status: 0 when no step failed, else 1.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out=""
dry=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry="--dry-run" ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $arg; usage: bash scripts/gpu_check.sh [OUT_DIR] [--dry-run]" >&2; exit 2 ;;
    *) out="$arg" ;;
  esac
done
out="${out:-${OUT:-gpu-check}}"
mkdir -p "$out/steps"
out="$(cd "$out" && pwd)"
PY="${PYTHON:-python3}"
export HF_HUB_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# Tests and probes must see the GPU: no interpreter, no forced backend left over from the caller.
unset TRITON_INTERPRET AION_FAST_BACKEND AION_FAST_BENCH_DEVICE
log="$out/gpu_check.log"
: > "$log"
echo "[gpu_check] python: $(command -v "$PY"), results in $out ${dry:+(dry run)}" | tee -a "$log"

start=$(date +%s)
while read -r step box; do
  [ -z "$step" ] && continue
  if [ -n "${GPU_CHECK_ONLY:-}" ] && [[ ",$GPU_CHECK_ONLY," != *",$step,"* ]]; then continue; fi
  if [ -n "$dry" ]; then box=300; fi  # 2 shared CPU cores, not the GPU machine: the boxes are for the real run
  timeout --kill-after=10 "$box" "$PY" scripts/gpu_check.py --step "$step" --out "$out" $dry >> "$log" 2>&1
  rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    printf '{"name": "%s", "status": "timeout", "reason": "exceeded its time box of %s s", "seconds": %s}\n' \
      "$step" "$box" "$box" > "$out/steps/$step.json"
  elif [ ! -s "$out/steps/$step.json" ]; then
    printf '{"name": "%s", "status": "crashed", "reason": "exit status %s without a result (see gpu_check.log)"}\n' \
      "$step" "$rc" > "$out/steps/$step.json"
  fi
  echo "[gpu_check] $step done (exit $rc, $(( $(date +%s) - start )) s so far)" | tee -a "$log"
done < <("$PY" scripts/gpu_check.py --list)

"$PY" scripts/gpu_check.py --summarize --out "$out" | tee -a "$log"
status=${PIPESTATUS[0]}
echo "[gpu_check] total $(( $(date +%s) - start )) s" | tee -a "$log"
exit "$status"
