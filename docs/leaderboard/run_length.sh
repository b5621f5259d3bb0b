#!/bin/bash
# Delayed refusals (the refusal_length group: JailbreakBench at 32/128/256 new tokens under every
# condition) for both leaderboard models; same venv as run.sh. The committed results/length ran on
# the first board's plans (0.5B layers 10/14/18; 1.5B layer 22 with saes=qwen2.5-coder-1.5b-instruct-res,
# sae_layers=22, plan=refusal_eval/plans/qwen2.5-coder-1.5b-instruct-res-l22.json, both in git
# history at 3b95c43); as written now it runs each model's current default plan, as run.sh does.
#   PATH=$PWD/.venv-vllm/bin:$PATH bash docs/leaderboard/run_length.sh
set -euo pipefail
export HF_HUB_OFFLINE=1
LIMIT=${LIMIT:-20}   # prompts per task (15 tasks)
MODEL=${MODEL:-sae_ablated_vllm}
BATCH=${BATCH:-auto}
OUT=results/length
lm_eval --model "$MODEL" --model_args pretrained=qwen2.5-coder-0.5b-instruct \
  --tasks refusal_length --batch_size "$BATCH" --limit "$LIMIT" --output_path "$OUT/qwen0.5b"
lm_eval --model "$MODEL" --model_args pretrained=qwen2.5-coder-1.5b-instruct \
  --tasks refusal_length --batch_size "$BATCH" --limit "$LIMIT" --output_path "$OUT/qwen1.5b"
