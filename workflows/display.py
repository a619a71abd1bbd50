"""What a run shows while it runs: the Web UI's details (plan checklist, what waits for approval, the bill)
and the one-line form of a tool call an approver sees. Pure rendering, called from the workflow."""

from __future__ import annotations

import json

from stakeflow.agents.billing import cost_line
from stakeflow.agents.types import Progress, ToolCall

_MARKS = {
    "ok": "x",
    "tool_error": "x",
    "failed": "!",
    "skipped": "-",
    "running": " ",
    "pending": " ",
    "awaiting_approval": "?",
}


def checklist(progress: Progress, awaiting: dict[int, str], workflow_id: str) -> str:
    """Markdown for ``workflow.set_current_details``: phase, each step as a checkbox, approvals, the bill."""
    lines = [f"**{progress.phase}**"]
    for s in progress.steps:
        route = f" · {s.route}" if s.status != "pending" else ""
        extra = {
            "running": " (running" + (f", round {progress.current_round}" if progress.current_round > 1 else "") + ")",
            "tool_error": " (tool error)",
            "skipped": f" (skipped: {s.error})",
            "awaiting_approval": " (**waiting for approval**)",
        }.get(s.status, "")
        lines.append(f"- [{_MARKS[s.status]}] {s.index}. {s.title}{route}{extra}")
    for index, what in sorted(awaiting.items()):
        # The plan (0) and the answer (n+1) wait too, for a frontier call over its budget: not in the checklist.
        why = progress.steps[index - 1].reason if 1 <= index <= len(progress.steps) else what
        lines.append(
            f"\n**Waiting for approval: step {index}** · {what}\nwhy: {why}\n"
            f"`stakeflow approve {workflow_id} {index}` or "
            f"`stakeflow reject {workflow_id} {index} --note ...`"
        )
    lines.append(f"\n{cost_line(progress.cost)}")
    if progress.error:
        lines.append(f"\nfailed: {progress.error}")
    return "\n".join(lines)


def describe_call(call: ToolCall, *, exact: bool = False) -> str:
    """``write_file(path='out.md', content='# Summary…')``: what an approver is asked to let happen.

    ``exact``: the arguments as JSON, whole — what would leave if the approver says yes.
    """
    if exact:
        return f"{call.tool} {json.dumps(call.args, ensure_ascii=False, sort_keys=True)}"
    args = ", ".join(f"{k}={_preview(v)}" for k, v in call.args.items())
    return f"{call.tool}({args})"


def _preview(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
