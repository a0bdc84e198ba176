#!/usr/bin/env bash
# The check behind the default experiment's lr and steps (README, "How the defaults were
# chosen"): each setting trained as `python -m urlkit.run` would, then scored on the DEV split
# (data.test_split=dev; no dev evaluation during training), so the choice never reads a test
# query. One run at a time (each ~7-10 min on a 2-core CPU); seeds outermost.
#
#   bash scripts/tune_defaults.sh [root] [seeds] [settings]
#       defaults: outputs/tuning, "0 1", "2e-4 300;4e-4 300;4e-4 200" (lr and optimizer steps)
#   python -m urlkit.significance <a>/per_query/wordsense_dev_reranker.csv <b>/per_query/wordsense_dev_reranker.csv --metric ndcg@10
set -euo pipefail
root=${1:-outputs/tuning}
seeds=${2:-0 1}
IFS=';' read -r -a settings <<< "${3:-2e-4 300;4e-4 300;4e-4 200}"
mkdir -p "$root"
for seed in $seeds; do
  for setting in "${settings[@]}"; do
    read -r lr steps <<< "$setting"
    name=lr${lr}_steps${steps}_seed${seed}
    start=$(date +%s)
    python -m urlkit.run logger=none data.test_split=dev eval.every_n_steps=0 \
      train.lr="$lr" train.max_steps="$steps" seed="$seed" output_root="$root/$name" > "$root/$name.log" 2>&1
    echo "$name: $(( $(date +%s) - start )) s" | tee -a "$root/wall_times.txt"
  done
done
