"""Service functions behind `stakeflow evals replay`, `stakeflow models lora` and `stakeflow learn`."""

from __future__ import annotations

import statistics
import uuid
from datetime import UTC
from typing import Any

from stakeflow.agents.evals import ReplayFilters, ReplayModelReport, ReplayPart, ReplayRequest
from stakeflow.agents.types import ModelEndpoint
from stakeflow.core.contracts import REPLAY_WORKFLOW, queue_name
from stakeflow.settings import Settings


async def start_replay(
    settings: Settings,
    model: str,
    base_url: str | None,
    part: ReplayPart,
    limit: int,
    concurrency: int,
    agent: str | None,
    tool: str | None,
):
    from stakeflow.connection import connect
    from stakeflow.endpoints import check_base_url
    from stakeflow.tasks import open_models

    if base_url:
        check_base_url(base_url)  # before anything starts; the open worker checks it again
    current = ModelEndpoint(route="open", model=open_models(settings, agent)[0], provider="openai-compatible")
    client = await connect(settings)
    candidate = ModelEndpoint(route="open", model=model, provider="openai-compatible", base_url=base_url or "")
    req = ReplayRequest(
        filters=ReplayFilters(part=part, agent=agent, tool=tool, split=settings.learn.split),
        models=[candidate, current],
        judge=ModelEndpoint(
            route="frontier", model=settings.evals.judge_model or settings.frontier_model, provider="anthropic"
        ),
        limit=limit,
        concurrency=concurrency,
        open_queue=queue_name("open", settings.queue_prefix),
        frontier_queue=queue_name("frontier", settings.queue_prefix),
        workflows_queue=queue_name("workflows", settings.queue_prefix),
    )
    handle = await client.start_workflow(
        REPLAY_WORKFLOW,
        req,
        id=f"replay-{uuid.uuid4().hex[:10]}",
        result_type=list[ReplayModelReport],
        task_queue=queue_name("workflows", settings.queue_prefix),
        static_summary=f"replay evaluation: {model} vs {current.model}",
    )
    return handle, req


def replay_rows(reports: list[ReplayModelReport]) -> list[dict[str, Any]]:
    rows = []
    for r in reports:
        low, high = r.interval
        rate = r.agreeing / r.n if r.n else 0.0
        rows.append(
            {
                "model": r.model + (f" @ {r.base_url}" if r.base_url else ""),
                "n": r.n,
                "agreeing": r.agreeing,
                "agreement": round(rate, 4),
                "agreement_low": round(low, 4),
                "agreement_high": round(high, 4),
                "agreement_text": f"{rate:.0%} ({low * 100:.0f}–{high:.0%})" if r.n else "no examples",
                "cost_usd": r.cost_usd,
                "judge_cost_usd": r.judge_cost_usd,
                "p50_ms": statistics.median(r.latencies_ms) if r.latencies_ms else 0.0,
                "errors": r.errors,
                "last_error": r.last_error,
            }
        )
    return rows


LORA_FLAGS = (
    "start vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora "
    "(--max-loras N --max-lora-rank R; deploy/vllm-serve.sh sets them)"
)


def lora(settings: Settings, action: str, name: str, path: str | None = None) -> str:
    """Load or unload a LoRA adapter on the open endpoint (vLLM's runtime LoRA API); the server's answer."""
    import httpx

    from stakeflow.core.errors import EndpointError, InputError

    url = settings.open_url
    headers = {"Authorization": f"Bearer {settings.open_api_key.get_secret_value()}"} if settings.open_api_key else {}
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


async def start_learn(
    settings: Settings, agent: str | None, *, margin: float | None = None, min_examples: int | None = None
):
    """Start a LearnWorkflow for the agent; (handle, request). InputError when the loop cannot work here."""
    from datetime import datetime

    from stakeflow.agents.evals import LearnRequest, LearnResult
    from stakeflow.connection import connect
    from stakeflow.core.contracts import LEARN_WORKFLOW
    from stakeflow.core.errors import InputError
    from stakeflow.promotions import learn_dir
    from stakeflow.tasks import open_models

    if not settings.frontier_configured:
        raise InputError(
            "stakeflow learn judges the adapter against the frontier's answers: set ANTHROPIC_API_KEY "
            "on the frontier worker (the judge, [evals] judge_model) and here, or "
            "STAKEFLOW_FRONTIER_AVAILABLE=true here when only the frontier worker holds it"
        )
    current, configured = open_models(settings, agent)  # InputError for an unknown agent
    cfg = settings.learn
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    learn_id = f"learn-{agent or 'open'}-{stamp}-{uuid.uuid4().hex[:4]}"
    workdir = learn_dir(settings) / learn_id
    req = LearnRequest(
        agent=agent or "",
        adapter_name=f"{agent or 'open'}-lora-{stamp}",
        base_model=cfg.base_model or configured,
        current_model=current,
        configured_model=configured,
        judge_model=settings.evals.judge_model or settings.frontier_model,
        workdir=str(workdir),
        margin=cfg.margin if margin is None else margin,
        min_examples=cfg.min_examples if min_examples is None else min_examples,
        split=cfg.split,
        timeout_s=cfg.timeout_s,
        heartbeat_s=cfg.heartbeat_s,
        replay_limit=cfg.replay_limit,
        queue_prefix=settings.queue_prefix,
    )
    client = await connect(settings)
    handle = await client.start_workflow(
        LEARN_WORKFLOW,
        req,
        id=learn_id,
        result_type=LearnResult,
        task_queue=queue_name("workflows", settings.queue_prefix),
        static_summary=f"learn: train an adapter for {agent or 'the open route'}, judge it against {current}",
    )
    return handle, req
