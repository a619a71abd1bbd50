"""Service functions behind `stakeflow evals replay` and `stakeflow learn` (adapters on vLLM: stakeflow.endpoints)."""

from __future__ import annotations

import statistics
import uuid
from datetime import UTC, datetime
from typing import Any

from stakeflow.agents.evals import (
    LearnRequest,
    LearnResult,
    ReplayFilters,
    ReplayModelReport,
    ReplayPart,
    ReplayRequest,
)
from stakeflow.agents.types import ModelEndpoint
from stakeflow.config import Settings
from stakeflow.core.contracts import LEARN_WORKFLOW, REPLAY_WORKFLOW, queue_name
from stakeflow.core.errors import InputError
from stakeflow.endpoints import check_base_url
from stakeflow.services.runs import open_models
from stakeflow.stores.promotions import learn_dir
from stakeflow.temporal.connection import connect


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


async def start_learn(
    settings: Settings, agent: str | None, *, margin: float | None = None, min_examples: int | None = None
):
    """Start a LearnWorkflow for the agent; (handle, request). InputError when the loop cannot work here."""
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
