"""Probing the model endpoints: the one place that decides whether a route answers, and what to do if not.

``up``, ``models``, ``doctor`` and the embedded model's readiness all ask here, so they cannot disagree
(an HTTP 500 from ``/models`` is a broken endpoint for all of them). Two depths:

- ``probe_models``: ``GET <open>/models`` (cheap; what ``up`` checks for a configured vLLM server);
- ``probe_completion``: a real structured-output completion in the configured dialect, the only proof
  that the model runs (a llama.cpp build that faults on this CPU passes ``/models`` and dies here).

No key is ever part of a probe's result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from stakeflow.config import Settings
from stakeflow.core.errors import InputError

ANTHROPIC_DEFAULT_URL = "https://api.anthropic.com"
_BASE_URL_FIX = "give the candidate's OpenAI-compatible server as http(s)://host[:port]/v1"
_PROBE_SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}


def check_base_url(url: str) -> str:
    """A candidate model's server URL (``stakeflow evals replay --base-url``), checked; InputError naming the fix.

    It is a workflow input, so anyone who can start a workflow can name one: only http(s) to a named host, and no
    credentials, query or fragment (a key goes in no URL; the worker sends its key only to the configured endpoint).
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as e:
        raise InputError(f"--base-url is not a URL ({e}): {_BASE_URL_FIX}") from None
    shown = str(parsed.copy_with(userinfo=b"", query=None, fragment=None)) if parsed.host else url.split("@")[-1]
    if parsed.scheme not in ("http", "https"):
        why = "it must start with http:// or https://"
    elif parsed.userinfo:
        why = "it carries credentials (user:password@): a key never goes in a URL"
    elif not parsed.host:
        why = "it names no host"
    elif parsed.query or parsed.fragment:
        why = "it has a query or fragment"
    else:
        return url
    raise InputError(f"--base-url {shown}: {why}; {_BASE_URL_FIX}")


def same_endpoint(a: str, b: str) -> bool:
    """True when two base URLs name the same server and path (``http://h:8000/v1/`` is ``http://H:8000/v1``)."""
    try:
        x, y = httpx.URL(a.rstrip("/")), httpx.URL(b.rstrip("/"))
    except httpx.InvalidURL:
        return False
    return (x.scheme, x.host, x.port, x.path) == (y.scheme, y.host, y.port, y.path)


@dataclass(frozen=True)
class Probe:
    """What one check of an endpoint found. ``fix`` is set whenever ``ok`` is not."""

    ok: bool
    detail: str
    fix: str = ""
    served_models: list[str] = field(default_factory=list)
    status: int | None = None
    adapters: list[dict[str, str]] = field(default_factory=list)  # vLLM LoRA adapters: id and parent (base)


def _open_headers(settings: Settings) -> dict[str, str]:
    if settings.open_api_key:
        return {"Authorization": f"Bearer {settings.open_api_key.get_secret_value()}"}
    return {}


def _unreachable_fix(settings: Settings) -> str:
    if not settings.embedded:
        return "start your vLLM server (see deploy/) or fix STAKEFLOW_OPEN_BASE_URL"
    from stakeflow.local import processes

    crashed = processes.state(settings, "embedded-model")
    if crashed.state == "crashed":
        return f"{crashed.describe()}; see `stakeflow doctor`, then `stakeflow up` starts it again"
    return "run `stakeflow up` (it starts the embedded model)"


def _http_verdict(settings: Settings, r: httpx.Response, what: str) -> Probe | None:
    """A failed Probe for a non-200 answer, or None when the answer is 200."""
    url = settings.open_url
    if r.status_code in (401, 403):
        return Probe(
            False, f"{url} refused the key (HTTP {r.status_code})", "set STAKEFLOW_OPEN_API_KEY", status=r.status_code
        )
    if r.status_code == 404 and what == "completion":
        return Probe(
            False,
            f"{url} has no model '{settings.open_model_id}' (HTTP 404)",
            "set STAKEFLOW_OPEN_MODEL to a model the server serves (`stakeflow models`)",
            status=404,
        )
    if r.status_code != 200:
        return Probe(
            False,
            f"{url} answers {what} with HTTP {r.status_code}",
            "check the model server's log (for vLLM: its pod or process output)",
            status=r.status_code,
        )
    return None


def probe_models(settings: Settings, timeout: float = 3.0) -> Probe:
    """``GET <open>/models``: reachable, accepts the key, and lists its model ids."""
    url = settings.open_url
    try:
        r = httpx.get(f"{url}/models", headers=_open_headers(settings), timeout=timeout)
    except httpx.HTTPError as e:
        return Probe(False, f"{url} is unreachable ({type(e).__name__})", _unreachable_fix(settings))
    failed = _http_verdict(settings, r, "/models")
    if failed:
        return failed
    try:
        listed = r.json().get("data", [])
        ids = [str(m.get("id", "?")) for m in listed]
    except (ValueError, AttributeError):
        return Probe(
            False, f"{url}/models did not answer a model list", "is this an OpenAI-compatible server?", status=200
        )
    adapters = [{"id": str(m["id"]), "parent": str(m["parent"])} for m in listed if m.get("parent")]
    return Probe(
        True, "serves " + (", ".join(ids) or "(no models listed)"), served_models=ids, status=200, adapters=adapters
    )


def completion_request(settings: Settings, max_tokens: int = 12) -> dict[str, Any]:
    """A tiny structured-output chat request in the configured dialect (what ``call_model`` sends, in small)."""
    if settings.dialect == "llamacpp":
        fmt: dict[str, Any] = {"type": "json_object", "schema": _PROBE_SCHEMA}
    else:
        fmt = {"type": "json_schema", "json_schema": {"name": "probe", "schema": _PROBE_SCHEMA, "strict": True}}
    return {
        "model": settings.open_model_id,
        "messages": [{"role": "user", "content": 'Answer with the JSON {"ok": true}.'}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "response_format": fmt,
    }


def probe_completion(settings: Settings, timeout: float = 60.0) -> Probe:
    """One structured-output completion: the model runs, and answers JSON in the configured dialect."""
    url = settings.open_url
    try:
        r = httpx.post(
            f"{url}/chat/completions",
            json=completion_request(settings),
            headers=_open_headers(settings),
            timeout=timeout,
        )
    except httpx.HTTPError as e:
        return Probe(False, f"{url} did not complete a request ({type(e).__name__})", _unreachable_fix(settings))
    failed = _http_verdict(settings, r, "completion")
    if failed:
        return failed
    try:
        content = r.json()["choices"][0]["message"]["content"]
        json.loads(content)
    except (ValueError, KeyError, IndexError, TypeError):
        return Probe(
            False,
            f"{url} answered a structured-output request without JSON ({settings.dialect} dialect)",
            "set STAKEFLOW_OPEN_DIALECT to the server's dialect (vllm, llamacpp, openai)",
            status=200,
        )
    return Probe(True, f"answers structured output ({settings.dialect} dialect)", status=200)


def probe_frontier(settings: Settings, timeout: float = 5.0) -> Probe:
    """The frontier route: key present, and (when reachable) accepted. The key itself is never shown."""
    if not settings.frontier_configured or settings.anthropic_api_key is None:
        return Probe(
            False,
            "ANTHROPIC_API_KEY is not set: high-stakes steps run on the open model",
            "export ANTHROPIC_API_KEY (or keep running open-only)",
        )
    url = settings.anthropic_base_url or ANTHROPIC_DEFAULT_URL
    headers = {"x-api-key": settings.anthropic_api_key.get_secret_value(), "anthropic-version": "2023-06-01"}
    try:
        r = httpx.get(f"{url.rstrip('/')}/v1/models", headers=headers, timeout=timeout)
    except httpx.HTTPError as e:
        return Probe(False, f"{url} is unreachable ({type(e).__name__})", "check ANTHROPIC_BASE_URL and the network")
    if r.status_code in (401, 403):
        return Probe(False, f"key rejected (HTTP {r.status_code})", "check ANTHROPIC_API_KEY", status=r.status_code)
    if r.status_code != 200:
        return Probe(False, f"{url} answers HTTP {r.status_code}", "check ANTHROPIC_BASE_URL", status=r.status_code)
    try:
        ids = [str(m.get("id")) for m in r.json().get("data", [])]
    except (ValueError, AttributeError):
        ids = []
    return Probe(True, "key accepted", served_models=ids, status=200)


def describe_endpoints(settings: Settings) -> list[dict[str, Any]]:
    """What `stakeflow models` reports: one entry per route; never includes a key."""
    opened = probe_models(settings)
    frontier = probe_frontier(settings)
    return [
        {
            "route": "open",
            "configured": True,
            "url": settings.open_url,
            "model": settings.open_model_id,
            "dialect": settings.dialect,
            "embedded": settings.embedded,
            "reachable": opened.ok,
            "served_models": opened.served_models,
            "adapters": opened.adapters,
            "detail": opened.detail if opened.ok else f"{opened.detail}: {opened.fix}",
        },
        {
            "route": "frontier",
            "configured": settings.frontier_configured,
            "url": settings.anthropic_base_url or ANTHROPIC_DEFAULT_URL,
            "model": settings.frontier_model,
            "reachable": frontier.ok,
            "served_models": frontier.served_models,
            "detail": frontier.detail
            if frontier.ok or not settings.frontier_configured
            else f"{frontier.detail}: {frontier.fix}",
        },
    ]
