"""Adapters on the open endpoint: vLLM's runtime LoRA API (`stakeflow models lora`, the learn loop's load step).

A server started without ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` and ``--enable-lora`` has no such API: it is
told so, with the flags.
"""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from stakeflow.core.errors import EndpointError, InputError

LORA_FLAGS = (
    "start vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora "
    "(--max-loras N --max-lora-rank R; deploy/vllm-serve.sh sets them)"
)


def lora(url: str, api_key: SecretStr | None, action: str, name: str, path: str | None = None) -> str:
    """Load or unload a LoRA adapter on the OpenAI-compatible server at ``url`` (vLLM's runtime LoRA API); the
    server's answer. EndpointError when it cannot, InputError when it refuses (its message)."""
    headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"} if api_key else {}
    body: dict[str, str] = {"lora_name": name}
    if action == "load":
        body["lora_path"] = str(path)
    try:
        r = httpx.post(f"{url}/{action}_lora_adapter", json=body, headers=headers, timeout=600)
    except httpx.HTTPError as e:
        raise EndpointError(
            f"{url} is unreachable ({type(e).__name__}): start vLLM (deploy/) or fix STAKEFLOW_OPEN_BASE_URL"
        ) from None
    if r.status_code == 404 and "lora" not in r.text.lower():
        raise EndpointError(f"{url} has no runtime LoRA API (HTTP 404): {LORA_FLAGS}")
    text = r.text.strip().strip('"')
    if r.status_code != 200:
        try:
            text = r.json().get("message", text)
        except (ValueError, AttributeError):
            pass
        raise InputError(f"vLLM refused to {action} adapter '{name}' (HTTP {r.status_code}): {text}")
    return text
