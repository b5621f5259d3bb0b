#!/usr/bin/env bash
# The README's lm_eval command with generation batches of one condition (mix_conditions=false)
# and mixed across conditions (the default), back to back with the same caches: wall time of
# each and the summary each prints. Run it with the CPU to itself:
#   bash benchmarks/mix_conditions.sh [LIMIT] [OUTDIR]      (defaults: 2, a new temporary dir)
set -euo pipefail
limit="${1:-2}"
out="${2:-$(mktemp -d)}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
for mix in false true; do
  start=$(date +%s.%N)
  HF_HUB_OFFLINE=1 .venv/bin/lm_eval --model sae_ablated --model_args "pretrained=default,mix_conditions=$mix" \
    --tasks refusal_ablation --limit "$limit" --output_path "$out/mix-$mix" > "$out/mix-$mix.log" 2>&1
  end=$(date +%s.%N)
  printf 'mix_conditions=%s: %.0f s\n' "$mix" "$(echo "$end - $start" | bc)"
  sed -n '/^refusal_eval summary/,/^baseline refusal corrected/p' "$out/mix-$mix.log"
done
