"""Capture of model calls for datasets: the full request and response, kept in the local trace store only.

With ``[dataset] capture = true`` (or ``[evals] capture = true``) every model call a run makes is one row of the
``captures`` table: the request as the model saw it (system, worked examples, prompt, the output's JSON schema),
the structured answer, and run, step, agent, tool, route, model, price version. The rows are written as record
files (``stakeflow.traces.RecordWriter``) keyed by the call and attempt, never into spans, so they never reach an
OTLP backend. Private runs are captured only with ``[dataset] include_private = true`` — the workflow decides,
and every row says whether it was private.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stakeflow.activities.model_outputs import plan_output_model, step_output_model
from stakeflow.agents.types import JudgeVerdict, ModelCallRequest, ModelCallResult
from stakeflow.traces import RecordWriter, spool_dir_for


def output_schema(req: ModelCallRequest) -> dict[str, Any] | None:
    """The JSON schema the call's answer had to match (None for a free-text answer)."""
    if req.purpose == "plan":
        return plan_output_model(req.tools, req.max_steps, req.first_step_tools).model_json_schema()
    if req.purpose == "step":
        return step_output_model(req.tools).model_json_schema()
    if req.purpose == "judge":
        return JudgeVerdict.model_json_schema()
    return None


def request_record(req: ModelCallRequest) -> dict[str, Any]:
    return {
        "purpose": req.purpose,
        "system": req.system,
        "prompt": req.prompt,
        "examples": [e.model_dump() for e in req.examples],
        "output_schema": output_schema(req),
        "tools": [t.name for t in req.tools],
        # Enough to ask another model the same question (stakeflow evals replay).
        "tool_specs": [t.model_dump() for t in req.tools],
        "max_steps": req.max_steps,
        "first_step_tools": req.first_step_tools,
        "max_output_tokens": req.max_output_tokens,
    }


def response_record(result: ModelCallResult) -> dict[str, Any]:
    if result.plan is not None:
        return {"plan": result.plan.model_dump(mode="json")}
    if result.action is not None:
        return {"action": result.action.model_dump(mode="json")}
    if result.verdict is not None:
        return {"verdict": result.verdict.model_dump(mode="json")}
    return {"text": result.text or ""}


class Capturer:
    """Writes one captures row per finished model call that asks for it."""

    def __init__(self, traces_path: Path) -> None:
        self._traces_path = traces_path  # the trace store whose spool the rows go to
        self._writer: RecordWriter | None = None

    async def record(self, req: ModelCallRequest, result: ModelCallResult | None, attempt: int) -> None:
        if not req.capture:
            return
        if self._writer is None:
            self._writer = RecordWriter(spool_dir_for(self._traces_path), "captures")
        row = {
            # One row per call: a retry that succeeds after a failed attempt is a separate (later) row.
            "capture_id": f"{req.run_id}/{req.step}/{req.purpose}/{req.endpoint.route}/{attempt}",
            "recorded_at": datetime.now(UTC).replace(tzinfo=None).isoformat(),
            "run_id": req.run_id,
            "step": req.step,
            "purpose": req.purpose,
            "tool": req.tool or None,
            "agent": req.agent or None,
            "route": req.endpoint.route,
            "model": (result.model if result else "") or req.endpoint.model,
            "source": req.source,
            "sensitivity": "private" if req.private else "public",
            "include_private": req.private,
            "price_version": result.cost.price_version if result else None,
            "ok": result is not None,
            "request": request_record(req),  # JSON columns take the objects themselves
            "response": response_record(result) if result else None,
        }
        await asyncio.to_thread(self._writer.write, [row])
