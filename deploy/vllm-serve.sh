#!/usr/bin/env bash
# Serve the open model for stakeflow with vLLM (OpenAI-compatible API on :8000).
# Usage: MODEL=Qwen/Qwen2.5-7B-Instruct deploy/vllm-serve.sh
set -euo pipefail
MODEL="${MODEL:-Qwen/Qwen2.5-7B-Instruct}"
exec vllm serve "$MODEL" \
  --host 0.0.0.0 --port "${PORT:-8000}" \
  --served-model-name "${SERVED_NAME:-$MODEL}" \
  --max-model-len "${MAX_MODEL_LEN:-16384}" \
  --gpu-memory-utilization "${GPU_MEM:-0.90}" \
  --enable-auto-tool-choice --tool-call-parser "${TOOL_PARSER:-hermes}" \
  ${VLLM_API_KEY:+--api-key "$VLLM_API_KEY"}
