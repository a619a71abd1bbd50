"""``[hooks.<name>]``: what a webhook may start, for which events, and the goal template it renders.

A goal template is plain text with ``{payload.a.b}`` placeholders: dotted paths into the JSON
body (a number selects a list item, ``{payload.commits.0.id}``). ``{{`` and ``}}`` are literal
braces. Nothing is evaluated and no attribute of any Python object is reachable: the renderer
only walks dicts and lists of the parsed JSON.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator

from stakeflow.agents.budgets import OnExceeded
from stakeflow.agents.types import Sensitivity, StakesOverride
from stakeflow.config._sections import usd_limit

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_TIMESTAMP_TOLERANCE_S = 300.0

# An event or action name in a hook's filters: GitHub's are like "issues", "issue_comment", "opened".
Name = Annotated[str, StringConstraints(min_length=1, max_length=100)]

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


class TemplateError(ValueError):
    """A goal template that cannot be parsed (checked when the config loads)."""


class MissingField(LookupError):
    """A placeholder names a field the payload lacks; ``path`` is the dotted path."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def parse_template(template: str) -> list[str | tuple[str, ...]]:
    """Literal strings and placeholder paths (the segments after ``payload``), in order."""
    parts: list[str | tuple[str, ...]] = []
    pos = 0
    for m in _TOKEN.finditer(template):
        if m.start() > pos:
            parts.append(template[pos : m.start()])
        pos = m.end()
        token = m.group(0)
        if token in ("{{", "}}"):
            parts.append(token[0])
            continue
        if m.group(1) is None:
            raise TemplateError(
                f"unmatched '{token}' at character {m.start()}: write '{token * 2}' for a literal brace"
            )
        segments = tuple(m.group(1).strip().split("."))
        if segments[0] != "payload" or len(segments) < 2 or not all(_SEGMENT.fullmatch(s) for s in segments[1:]):
            raise TemplateError(
                f"placeholder '{{{m.group(1)}}}' must be a dotted path into the body, e.g. {{payload.issue.title}}"
            )
        parts.append(segments[1:])
    if pos < len(template):
        parts.append(template[pos:])
    return parts


def render_goal(template: str, payload: Any) -> str:
    """The goal text for one delivery; MissingField naming the first absent field."""
    out: list[str] = []
    for part in parse_template(template):
        out.append(part if isinstance(part, str) else _text(_lookup(payload, part)))
    return "".join(out)


def template_fields(template: str) -> list[str]:
    """The dotted payload paths a template uses."""
    return [".".join(p) for p in parse_template(template) if not isinstance(p, str)]


def _lookup(payload: Any, path: tuple[str, ...]) -> Any:
    value = payload
    for i, key in enumerate(path):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise MissingField(".".join(path[: i + 1]))
    return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


class HookConfig(BaseModel):
    """One ``[hooks.<name>]`` table. The secret itself lives in the environment, never here."""

    model_config = ConfigDict(extra="forbid")

    secret_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")  # the NAME of the variable holding the secret
    goal: str = Field(min_length=1)
    stakes: StakesOverride = "auto"
    sensitivity: Sensitivity = "public"
    tools: list[str] | None = None  # None = every enabled tool
    # The named agent that runs the hook's deliveries; None = the default agent.
    agent: str | None = Field(default=None, min_length=1)
    # Which deliveries start runs: the event header (X-Stakeflow-Event, else X-GitHub-Event) must be in
    # ``events`` and the payload's "action" in ``actions``; None = any. Others answer 202 {"ignored": why}.
    events: list[Name] | None = None
    actions: list[Name] | None = None
    # Which signature header to accept; None accepts either.
    signature: Literal["stakeflow", "github"] | None = None
    # X-Stakeflow-Timestamp must be this fresh; require_timestamp refuses X-Stakeflow-Signature-256
    # deliveries without one (GitHub's header cannot carry one: signature = "stakeflow" refuses those).
    timestamp_tolerance_s: float = Field(default=DEFAULT_TIMESTAMP_TOLERANCE_S, gt=0)
    require_timestamp: bool = True
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1)
    # Storms (a bulk relabel, two bots in a loop, a replayed backlog): a delivery over either limit is answered
    # 429 with Retry-After and starts nothing. Counted in Temporal, shared by every server process. None = no limit.
    max_runs_per_minute: int | None = Field(default=None, ge=1)
    max_concurrent_runs: int | None = Field(default=None, ge=1)
    usd_per_day: float | None = None  # the frontier spend of this hook's runs per UTC day (agents/budgets.py)
    on_exceeded: OnExceeded | None = None  # what its usd_per_day does when spent; default: [budgets] on_exceeded

    @field_validator("usd_per_day", mode="before")
    @classmethod
    def _limit(cls, value: object) -> object:
        return usd_limit(value, "[hooks.<name>] usd_per_day")

    @field_validator("goal")
    @classmethod
    def _template_parses(cls, goal: str) -> str:
        try:
            parse_template(goal)
        except TemplateError as e:
            raise ValueError(str(e)) from None
        return goal

    @field_validator("events", "actions")
    @classmethod
    def _filter_not_empty(cls, names: list[str] | None, info: ValidationInfo) -> list[str] | None:
        # An empty list would answer every delivery with "ignored", which no one means to configure.
        if names is not None and not names:
            example = '["issues"]' if info.field_name == "events" else '["opened"]'
            raise ValueError(
                f"{info.field_name} = [] would ignore every delivery: remove the key to accept all, "
                f"or name some, e.g. {info.field_name} = {example}"
            )
        return names
