#!/usr/bin/env bash
# Serve the open model for stakeflow with vLLM (OpenAI-compatible API on :8000), with LoRA adapters.
# Usage: MODEL=Qwen/Qwen2.5-7B-Instruct deploy/vllm-serve.sh
#        LORA_MODULES="support-v3=/adapters/support-v3" deploy/vllm-serve.sh   # adapters loaded at start
# Runtime loading (`stakeflow models lora load NAME PATH`, and `stakeflow learn`) needs
# VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, which this script sets unless you set it to False.
set -euo pipefail
MODEL="${MODEL:-Qwen/Qwen2.5-7B-Instruct}"
export VLLM_ALLOW_RUNTIME_LORA_UPDATING="${VLLM_ALLOW_RUNTIME_LORA_UPDATING:-True}"
lora_modules=()
if [[ -n "${LORA_MODULES:-}" ]]; then
  read -r -a lora_modules <<< "$LORA_MODULES"    # space-separated name=path pairs
  lora_modules=(--lora-modules "${lora_modules[@]}")
fi
exec vllm serve "$MODEL" \
  --host 0.0.0.0 --port "${PORT:-8000}" \
  --served-model-name "${SERVED_NAME:-$MODEL}" \
  --max-model-len "${MAX_MODEL_LEN:-16384}" \
  --gpu-memory-utilization "${GPU_MEM:-0.90}" \
  --max-num-seqs "${MAX_NUM_SEQS:-256}" \
  --enable-auto-tool-choice --tool-call-parser "${TOOL_PARSER:-hermes}" \
  --enable-lora --max-loras "${MAX_LORAS:-4}" --max-lora-rank "${MAX_LORA_RANK:-64}" \
  "${lora_modules[@]}" \
  ${VLLM_API_KEY:+--api-key "$VLLM_API_KEY"}
