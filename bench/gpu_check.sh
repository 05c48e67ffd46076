#!/usr/bin/env bash
# GPU check of mbtrain's engine (issue 10 targets), self-contained, ~5 minutes on one H100/H200:
#   1. SmolLM2-135M-Instruct-shaped stage 1 (mbtrain fit -> TRL SFTTrainer), bf16: tokens/s
#      (target >= 150k) and peak memory;
#   2. a 1B-parameter Llama shape (random init) with a plain transformers Trainer: tokens/s,
#      MFU = 6*N*tokens/s / bf16 peak (target >= 40%), peak memory;
#   3. stage 1 again under torchrun --nproc_per_node 2 when the machine has 2+ GPUs (else skipped,
#      and the figures say so).
#
#   bash bench/gpu_check.sh               # figures in $OUT if set, else bench/gpu-out/
#   bash bench/gpu_check.sh --dry-run     # CPU, tiny shapes: checks the script runs (~1 min)
#   MB_GPU_MODEL=/path/to/hf-folder bash bench/gpu_check.sh   # real SmolLM2 weights for figure 1
#   MB_PEAK_TFLOPS=989 bash bench/gpu_check.sh                # the card's bf16 dense peak
#
# Needs: python with torch (CUDA), transformers, accelerate, peft, tokenizers, numpy, pyyaml; trl
# and datasets for figures 1 and 3 (without them those are skipped with a note). Not needed:
# polars, datasketch, gguf, a build folder or the network (rows are synthetic token ids).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
DEST="${OUT:-$HERE/gpu-out}"
PY="${PYTHON:-python3}"
mkdir -p "$DEST"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
FIG="$DEST/gpu_figures.jsonl"
: > "$FIG"
ARGS=(--out "$FIG" --peak-tflops "${MB_PEAK_TFLOPS:-989}")
[ -n "${MB_GPU_MODEL:-}" ] && ARGS+=(--model "$MB_GPU_MODEL")
if [ "${1:-}" = "--dry-run" ]; then
  ARGS+=(--dry-run)
  NGPU=0
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    > "$DEST/gpu.txt" 2>&1 || true
  NGPU="$("$PY" -c 'import torch; print(torch.cuda.device_count())')"
  [ "$NGPU" -ge 1 ] || { echo "no CUDA device: use --dry-run" >&2; exit 2; }
fi
"$PY" -c 'import importlib.util as u; m=[p for p in ("torch","transformers","accelerate","peft","trl","datasets") if u.find_spec(p) is None]; print("missing packages:", m or "none")' \
  | tee "$DEST/packages.txt"
"$PY" "$HERE/gpu_throughput.py" "${ARGS[@]}" 2>&1 | tee "$DEST/gpu_check.log"
if [ "$NGPU" -ge 2 ]; then
  "$PY" -m torch.distributed.run --nproc_per_node 2 "$HERE/gpu_throughput.py" --only stage1 \
    "${ARGS[@]}" 2>&1 | tee -a "$DEST/gpu_check.log"
else
  echo '{"figure": "ddp", "skipped": "fewer than 2 GPUs on this machine"}' | tee -a "$FIG"
fi
echo "figures: $FIG"
