"""What `stakeflow models` reports: each route's endpoint, whether it answers, its model ids."""

from __future__ import annotations

from typing import Any

import httpx

from stakeflow.settings import Settings

ANTHROPIC_DEFAULT_URL = "https://api.anthropic.com"


def _open(settings: Settings) -> dict[str, Any]:
    headers = {}
    if settings.open_api_key:
        headers["Authorization"] = f"Bearer {settings.open_api_key.get_secret_value()}"
    entry: dict[str, Any] = {
        "route": "open", "configured": True, "url": settings.open_url, "model": settings.open_model_id,
        "dialect": settings.dialect, "embedded": settings.embedded, "reachable": False, "served_models": [],
        "detail": "",
    }
    try:
        r = httpx.get(f"{settings.open_url}/models", headers=headers, timeout=3.0)
        entry["reachable"] = r.status_code == 200
        if r.status_code == 200:
            entry["served_models"] = [m.get("id") for m in r.json().get("data", [])]
            entry["detail"] = "serves " + ", ".join(map(str, entry["served_models"]))
        else:
            entry["detail"] = f"HTTP {r.status_code}"
    except (httpx.HTTPError, ValueError) as e:
        hint = "run `stakeflow up`" if settings.embedded else "is vLLM running? (deploy/)"
        entry["detail"] = f"{type(e).__name__}: {hint}"
    return entry


def _frontier(settings: Settings) -> dict[str, Any]:
    url = settings.anthropic_base_url or ANTHROPIC_DEFAULT_URL
    entry: dict[str, Any] = {
        "route": "frontier", "configured": settings.frontier_configured, "url": url,
        "model": settings.frontier_model, "reachable": False, "served_models": [], "detail": "",
    }
    if not settings.frontier_configured:
        entry["detail"] = "ANTHROPIC_API_KEY is not set: high-stakes steps run on the open model"
        return entry
    headers = {
        "x-api-key": settings.anthropic_api_key.get_secret_value(),  # type: ignore[union-attr]
        "anthropic-version": "2023-06-01",
    }
    try:
        r = httpx.get(f"{url.rstrip('/')}/v1/models", headers=headers, timeout=5.0)
        entry["reachable"] = r.status_code == 200
        if r.status_code == 200:
            entry["served_models"] = [m.get("id") for m in r.json().get("data", [])]
            entry["detail"] = "key accepted"
        elif r.status_code in (401, 403):
            entry["detail"] = f"key rejected (HTTP {r.status_code}): check ANTHROPIC_API_KEY"
        else:
            entry["detail"] = f"HTTP {r.status_code}"
    except (httpx.HTTPError, ValueError) as e:
        entry["detail"] = f"{type(e).__name__}: check ANTHROPIC_BASE_URL and the network"
    return entry


def describe_endpoints(settings: Settings) -> list[dict[str, Any]]:
    """One entry per route; never includes a key."""
    return [_open(settings), _frontier(settings)]
