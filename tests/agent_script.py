"""Scripting a whole agent run on the fake model servers: plan, per-step actions, answer."""

from __future__ import annotations

import json
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
    replan: Any = None,
) -> Callable[[dict[str, Any]], Any]:
    """A responder for either fake server that plays the planner, each step and the answer.

    A step's item may be a list: one action per round of the step (the last repeats). ``replan``: what a
    revision of the plan answers (a plan, or a callable of the request); by default the plan's own steps
    after the one that failed, so a script that does not care about replanning goes on as planned.
    """
    steps = steps or {}

    def respond(body: dict[str, Any]) -> Any:
        purpose = purpose_of(body)
        if purpose == "plan" and is_replan(body):
            if replan is not None:
                return shaped(replan(body) if callable(replan) else replan, body)
            found = REPLAN_RE.search(prompt_text(body))
            failed = int(found.group(1)) if found else 0
            return {"steps": (the_plan or {"steps": []})["steps"][failed:]}
        if purpose == "plan":
            return shaped(the_plan, body) if the_plan is not None else Reply.error(500, "this server should not plan")
        if purpose == "step":
            item = steps.get(step_index(body))
            if item is None:
                return Reply.error(500, f"no scripted action for step {step_index(body)}")
            if isinstance(item, list):
                item = item[min(round_of(body), len(item)) - 1]
            return item(body) if callable(item) else item
        return answer(body) if callable(answer) else answer

    return respond


REPLAN_RE = re.compile(r"Step (\d+) did not get what it needed")
RESULTS_HEADER = "Results of your tool calls:"


def is_replan(body: dict[str, Any]) -> bool:
    return REPLAN_RE.search(prompt_text(body)) is not None


def round_of(body: dict[str, Any]) -> int:
    """Which round of its step a request is: 1 + the earlier rounds' results in its conversation (user turns on
    the open route, tool results of the output tool on the frontier)."""
    return 1 + json.dumps(body.get("messages") or []).count(RESULTS_HEADER)
