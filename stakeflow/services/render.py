"""Turning runs into what the CLI prints: human lines or one JSON object."""

from __future__ import annotations

import json
from typing import Any

from stakeflow.agents.billing import cost_line
from stakeflow.agents.types import (
    ApprovalRecord,
    CostSummary,
    Progress,
    RoundRecord,
    RouteDecision,
    StepRecord,
    TaskResult,
    Usage,
)


def usage_dict(u: Usage) -> dict[str, int]:
    """Usage as every JSON output shows it: ``input_tokens`` includes the cache, as on spans and in the
    trace store (definitions in ``stakeflow.agents.types.Usage``); the uncached part is named as such."""
    return {
        "input_tokens": u.total_input_tokens,
        "uncached_input_tokens": u.input_tokens,
        "cache_read_tokens": u.cache_read_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "output_tokens": u.output_tokens,
        "requests": u.requests,
    }


def step_dict(s: StepRecord) -> dict[str, Any]:
    return {
        "index": s.index,
        "title": s.title,
        "status": s.status,
        "route": s.route,
        "model": s.model,
        "stakes": s.stakes,
        "reason": s.reason,
        "tools": s.tools,
        "escalated": s.escalated,
        "fallback": s.fallback,
        "downgraded": s.downgraded,
        "needs_approval": needed_approval(s),
        "approval": _approval(s.approval),
        "waiting_for": s.waiting_for or None,
        "attempts": s.attempts,
        "tool_results": [
            {"tool": r.tool, "ok": r.ok, "error": r.error, "truncated": r.truncated, "replayed": r.replayed}
            for r in s.tool_results
        ],
        "error": s.error,
        "usage": usage_dict(s.usage),
        "cost_usd": s.cost_usd,
        "stuck": s.stuck or None,
        "rounds": [_round_dict(s, r) for r in s.rounds],
    }


def _round_dict(s: StepRecord, r: RoundRecord) -> dict[str, Any]:
    """One round of a step: where its model call ran, the calls it asked for and what they returned."""
    return {
        "round": r.round,
        "route": r.route,
        "model": r.model,
        "escalated": r.escalated,
        "tool_calls": [c.model_dump(mode="json") for c in r.tool_calls],
        "repeated": r.repeated,
        "note": r.note,
        "results": [
            {"tool": t.tool, "ok": t.ok, "error": t.error, "output": _preview(t.output, 500)}
            for t in s.tool_results
            if t.round == r.round
        ],
    }


def _preview(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more characters]"


def needed_approval(s: StepRecord) -> bool:
    """The step waited for (or was auto-given) approval; runs recorded before workers said so are read from
    their approval record."""
    return s.needs_approval or s.approval is not None or s.status == "awaiting_approval"


def _approval(a: ApprovalRecord | None) -> dict[str, Any] | None:
    if a is None:
        return None
    edited = None if a.edited_calls is None else [{"tool": c.tool, "args": c.args} for c in a.edited_calls]
    return {
        "decision": a.decision,
        "by": a.by,
        "note": a.note,
        "at": a.at,
        "waiting_for": a.waiting_for,
        "edited_calls": edited,
    }


def run_dict(
    workflow_id: str,
    run_id: str,
    status: str,
    ui_url: str,
    result: TaskResult | None = None,
    progress: Progress | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The JSON shape of `run --json`, `status --json` and `result --json`."""
    steps = result.steps if result else (progress.steps if progress else [])
    usage = result.usage if result else (progress.usage if progress else None)
    notices = result.notices if result else (progress.notices if progress else [])
    out: dict[str, Any] = {
        "run_id": run_id,
        "workflow_id": workflow_id,
        "status": status,
        "answer": result.answer if result else None,
        "steps": [step_dict(s) for s in steps],
        "ui_url": ui_url,
        "usage": usage_dict(usage) if usage else None,
        "notices": notices,
        "cost": _cost(result.cost if result else (progress.cost if progress else None)),
        "error": error or (progress.error if progress else None),
    }
    # Always present: whether the answer's figures appear in what the run observed (None: the run did not check).
    out["answer_supported"] = result.answer_supported if result else None
    out["unsupported_claims"] = list(result.unsupported_claims) if result else []
    if result:
        out["plan_route"] = _route(result.plan_route)
        out["answer_route"] = _route(result.answer_route)
        out["sensitivity"] = result.sensitivity
        out["replans"] = result.replans
    elif progress:
        out["phase"] = progress.phase
        out["current_step"] = progress.current_step
    return out


def _cost(c: CostSummary | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {**c.model_dump(), "total_usd": c.total_usd, "line": cost_line(c)}


def _route(d: RouteDecision | None) -> dict[str, Any] | None:
    return None if d is None else {"route": d.route, "model": d.model, "stakes": d.stakes, "reason": d.reason}


def step_line(s: StepRecord, total: int) -> str:
    tools = f" · {', '.join(s.tools)}" if s.tools else ""
    flags = "".join(
        f" · {name}"
        for name, on in (
            ("escalated", s.escalated),
            ("fallback", s.fallback),
            ("downgraded", s.downgraded),
            ("needs approval", needed_approval(s)),
        )
        if on
    )
    rounds = f" · {len(s.rounds)} rounds" if len(s.rounds) > 1 else ""
    line = f"  step {s.index}/{total} · {s.status} · {s.route} · {s.model}{tools}{flags}{rounds} — {s.title}"
    detail = f"\n      why: {s.reason}" if s.reason else ""
    if s.approval is not None:
        a = s.approval
        detail += f"\n      approval: {a.decision.replace('_', ' ')} by {a.by}" + (f": {a.note}" if a.note else "")
        for c in a.edited_calls or []:
            detail += f"\n      approved instead: {c.tool} {json.dumps(c.args, ensure_ascii=False)}"
    last = max((r.round for r in s.tool_results), default=1)
    for r in s.tool_results:
        if not r.ok:
            fixed = " (fixed in a later round)" if r.round < last and s.status == "ok" else ""
            detail += f"\n      {r.tool}: {r.error}{fixed}"
    if s.stuck:
        detail += f"\n      stuck: {s.stuck}"
    if s.error:
        detail += f"\n      error: {s.error}"
    return line + detail


def result_lines(result: TaskResult, *, steps: bool = True) -> list[str]:
    """A finished run: plan route, its steps (unless already shown as they finished), notices, bill, answer."""
    lines: list[str] = []
    if result.plan_route:
        lines.append(f"  plan · {result.plan_route.route} · {result.plan_route.model} — {result.plan_route.reason}")
    for s in result.steps if steps else []:
        lines.append(step_line(s, len(result.steps)))
    for n in result.notices:
        lines.append(f"  notice: {n}")
    u = result.usage
    lines.append(
        f"  tokens: {u.total_input_tokens} in ({u.cache_read_tokens} cache read · {u.cache_write_tokens} cache write)"
        f" · {u.output_tokens} out · {u.requests} requests"
    )
    lines.append("  " + cost_line(result.cost))
    lines.append("")
    if result.answer_supported is False:
        lines.append(unsupported_warning(result))
    lines.append(result.answer or "(empty answer)")
    return lines


def unsupported_warning(result: TaskResult) -> str:
    """The line before an answer the check could not support: what, and what would help."""
    return (
        f"warning: not supported by what the run observed: {', '.join(result.unsupported_claims)} "
        "(in no tool output or the goal); check before you rely on it. A stronger open model "
        "(STAKEFLOW_OPEN_BASE_URL) or a frontier key (ANTHROPIC_API_KEY, so such answers escalate) helps."
    )


def waiting_lines(s: StepRecord, total: int, workflow_id: str) -> list[str]:
    """A step that waits for approval: what would act, why, and the commands that decide."""
    return [
        f"  step {s.index}/{total} waits for approval: {s.waiting_for or ', '.join(s.tools)} — {s.title}",
        f"      why: {s.reason}",
        f"      approve: stakeflow approve {workflow_id} {s.index}",
        f'      reject:  stakeflow reject {workflow_id} {s.index} --note "why"',
    ]


def progress_lines(p: Progress, workflow_id: str) -> list[str]:
    lines = [f"  phase: {p.phase}" + (f" · step {p.current_step}/{p.total_steps}" if p.total_steps else "")]
    for s in p.steps:
        waiting = s.index in p.awaiting_approval
        lines += waiting_lines(s, p.total_steps, workflow_id) if waiting else [step_line(s, p.total_steps)]
    listed = {s.index for s in p.steps}
    for index in p.awaiting_approval:  # the plan (0) or the answer: a frontier call over its budget waits
        if index not in listed:
            what = "plan" if index == 0 else "answer"
            lines += [
                f"  {what} waits for approval: a frontier call over its budget (see the notices)",
                f"      approve: stakeflow approve {workflow_id} {index}",
                f'      reject:  stakeflow reject {workflow_id} {index} --note "why"',
            ]
    lines += [f"  notice: {n}" for n in p.notices]
    if p.error:
        lines.append(f"  error: {p.error}")
    return lines
