#!/usr/bin/env bash
# The check behind the default prompt's question (README, "How the defaults were chosen"): the
# default experiment trained with each prompt, then scored on the DEV split (data.test_split=dev;
# no dev evaluation during training), so the choice never reads a test query. One run at a time
# (each ~4-6 min on a 2-core bf16 CPU); seeds outermost. The prompts differ only in what follows
# the document and in the system turn:
#   urlkit_long_question    "Is the document relevant to the query? Answer yes or no." (the default until session 25)
#   urlkit                  "Relevant?" (the default since)
#   no_question             nothing after the document (the system turn asks), written below
#   no_system               "Relevant?" and no system turn, written below
#
#   bash scripts/tune_prompts.sh [root] [seeds] [prompts]
#       defaults: outputs/tuning_prompts, "0 1 2", "urlkit_long_question urlkit no_question no_system"
#   python scripts/tune_defaults_table.py --prompts <root>
set -euo pipefail
root=${1:-outputs/tuning_prompts}
seeds=${2:-0 1 2}
prompts=${3:-urlkit_long_question urlkit no_question no_system}
mkdir -p "$root/conf/prompt"
root=$(cd "$root" && pwd)
system='Judge whether the document meets the requirements of the query and the instruction. Answer only "yes" or "no".'
write_prompt() {  # name, system, template
  printf 'name: %s\nsystem: %s\ntemplate: "%s"\ndefault_instruction: ""\ntokens: ["yes", "no"]\nchat_template: null\n' \
    "$1" "$2" "$3" > "$root/conf/prompt/$1.yaml"
}
write_prompt no_question "'$system'" 'Instruction: {instruction}\nQuery: {query}\nDocument: {document}'
write_prompt no_system "''" 'Instruction: {instruction}\nQuery: {query}\nDocument: {document}\nRelevant?'
for seed in $seeds; do
  for prompt in $prompts; do
    name=${prompt}_seed${seed}
    start=$(date +%s)
    python -m urlkit.run logger=none data.test_split=dev eval.every_n_steps=0 prompt="$prompt" seed="$seed" \
      "hydra.searchpath=[file://$root/conf]" output_root="$root/$name" > "$root/$name.log" 2>&1
    echo "$name: $(( $(date +%s) - start )) s" | tee -a "$root/wall_times.txt"
  done
done
