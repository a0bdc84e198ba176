#!/usr/bin/env bash
# What is still to measure on a CPU with bf16 matrix units (an Intel Xeon with AMX), in one
# go: the list at the end of docs/performance.md's session 17, each step's output in its own
# log with its command and wall time. Sessions 13-18 ran on an AMD EPYC without those units,
# where bf16 products are emulated and none of these figures mean anything, so the script
# refuses such a machine unless FORCE=1.
#
#   bash docs/bench/probes/bf16_session.sh [out]      # default out: outputs/bf16_session; ~60-75 min
#   STEPS="1 3" bash docs/bench/probes/bf16_session.sh   # only some of the steps
#
# Run it from a `git archive` snapshot of the commit to measure (a benchmark reads the code it
# runs; an editable install elsewhere would measure that code instead), nothing else running:
#   git archive HEAD | tar -x -C /tmp/snap && cd /tmp/snap && pip install -q --no-deps -e . \
#     && bash docs/bench/probes/bf16_session.sh /tmp/bf16
# (then reinstall the clone you work in: pip install -q --no-deps -e <clone>).
#
# Steps:
#   1. the benchmark with the default experiment (the issue's figures on today's code)  ~50 min
#   2. training's float32 attention against bf16 products under autocast, 1+4 and 1+16  ~5 min
#   3. evaluation's packed attention: SDPA against urlkit's explicit dense and banded    ~3 min
#   4. the three operator rewrites session 16 measured in float32 only, over bf16 weights ~10 min
set -uo pipefail
cd "$(dirname "$0")/../../.."
out=${1:-outputs/bf16_session}
steps=${STEPS:-1 2 3 4}
mkdir -p "$out"

machine=$(python -m urlkit.machine 2>&1)
echo "$machine" | tee "$out/machine.txt"
if ! grep -q "bf16 matrix units: yes" <<< "$machine" && [ "${FORCE:-0}" != 1 ]; then
  echo "error: this machine has no bf16 matrix units; its bf16 figures would be emulation's (FORCE=1 runs anyway)" >&2
  exit 2
fi

# run NAME COMMAND...: the command and its wall time at the top of NAME.log, its output below.
run() {
  local name=$1; shift
  local log="$out/$name.log" start
  start=$(date +%s)
  { echo "\$ $*"; echo "# started $(date -u +%FT%TZ)"; } > "$log"
  "$@" >> "$log" 2>&1
  local rc=$?
  echo "# ended $(date -u +%FT%TZ), exit $rc, wall $(( $(date +%s) - start )) s" >> "$log"
  echo "$name: exit $rc, $(( $(date +%s) - start )) s ($log)"
}

for step in $steps; do
  case $step in
    1) run 1_bench python -m urlkit.bench --default-experiment --no-memory --no-threads \
         --eval-queries 60 --rounds 3 --json "$out/bench.json" ;;
    2) run 2_training_attention_precision python docs/bench/probes/training_attention_precision.py 32 4 16 ;;
    3) run 3_packed_attention python docs/bench/probes/packed_attention.py ;;
    4) for variant in silu_gate lora_function rotary_flip; do
         run "4_steps_$variant" env DTYPE=bfloat16 python docs/bench/probes/step_operators.py steps "$variant"
         run "4_rest_$variant" env DTYPE=bfloat16 python docs/bench/probes/step_operators.py rest "$variant"
       done ;;
    *) echo "error: no step $step (steps are 1 2 3 4)" >&2; exit 2 ;;
  esac
done
