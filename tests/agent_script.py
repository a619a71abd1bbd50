"""Scripting a whole agent run on the fake model servers: plan, per-step actions, answer."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tests.fakes import Reply, output_schema, prompt_text, purpose_of

STEP_RE = re.compile(r"Now step (\d+) of (\d+)")


def step_index(body: dict[str, Any]) -> int:
    m = STEP_RE.search(prompt_text(body))
    return int(m.group(1)) if m else 0


def plan(*steps: tuple[str, str | None] | tuple[str, str | None, str]) -> dict[str, Any]:
    """plan(("Read the notes", "read_file"), ("Write it down", "write_file", "high"))"""
    out = []
    for s in steps:
        title, tool = s[0], s[1]
        stakes = s[2] if len(s) > 2 else "low"
        out.append({"title": title, "tool": tool, "stakes": stakes})
    return {"steps": out}


def shaped(the_plan: Any, body: dict[str, Any]) -> Any:
    """A scripted ``{"steps": [...]}`` plan in the shape the request's schema asks for.

    When the goal names a workspace file, the plan schema is ``{"first": step, "then": [steps]}`` (the
    first step must read it); a model follows the schema it is given, so the fake does too.
    """
    schema = output_schema(body) or {}
    if isinstance(the_plan, dict) and "steps" in the_plan and "first" in (schema.get("properties") or {}):
        steps = the_plan["steps"]
        return {"first": steps[0], "then": steps[1:]} if steps else the_plan
    return the_plan


def call(tool: str, note: str = "done", **args: Any) -> dict[str, Any]:
    """A step action making one tool call."""
    return {"tool_calls": [{"tool": tool, "args": args}], "result": note}


def think(note: str) -> dict[str, Any]:
    return {"tool_calls": [], "result": note}


def agent(
    the_plan: dict[str, Any] | None = None,
    steps: dict[int, Any] | None = None,
    answer: str | Callable[[dict[str, Any]], str] = "the answer",
) -> Callable[[dict[str, Any]], Any]:
    """A responder for either fake server that plays the planner, each step and the answer."""
    steps = steps or {}

    def respond(body: dict[str, Any]) -> Any:
        purpose = purpose_of(body)
        if purpose == "plan":
            return shaped(the_plan, body) if the_plan is not None else Reply.error(500, "this server should not plan")
        if purpose == "step":
            item = steps.get(step_index(body))
            if item is None:
                return Reply.error(500, f"no scripted action for step {step_index(body)}")
            return item(body) if callable(item) else item
        return answer(body) if callable(answer) else answer

    return respond
