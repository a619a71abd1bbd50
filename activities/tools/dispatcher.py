"""The run_tool activity: looks up one tool call's executor by name and runs it, inside its limits.

A tool that refuses (bad arguments, a path outside the workspace, a host that is not
allowed, a write statement, a division by zero) returns ``ToolResult(ok=False, error=...)``:
the model chose that input, so it must see why it failed and try something else.
Exceptions are left for the worker's own trouble: an OSError in the ledger propagates so
Temporal retries it, and what no retry can fix raises a non-retryable ``ApplicationError``
of type ``TOOL_FAILED``.

A call on the tools queue heartbeats while its tool runs, whichever kind of tool it is (built-in, an MCP
server's, a Python function): a worker that dies or stalls mid-call is noticed within the activity's
heartbeat timeout, not its start-to-close timeout, and the retry (maybe on another host) starts that
much sooner; a live call is never retried while it runs. Local activities cannot heartbeat.

Every output is cut to ``MAX_OUTPUT_CHARS`` so a big page or table never lands in
workflow history whole. The tools themselves live one per module next to this one; this
module owns what is the same for all of them: validation, the span, timing and the cap.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from stakeflow.activities.heartbeats import heartbeating
from stakeflow.activities.mcp.sessions import ServerUnavailable
from stakeflow.activities.mcp.toolbox import CallMayHaveActed, McpToolbox
from stakeflow.activities.tools.context import ToolContext, ToolExecutor
from stakeflow.activities.tools.registry import EXECUTORS
from stakeflow.agents.tools import CATALOGUE
from stakeflow.agents.types import ToolRequest, ToolResult
from stakeflow.config import ToolsConfig
from stakeflow.core import semconv as sc
from stakeflow.core.contracts import RUN_TOOL, QueueRole
from stakeflow.core.errors import TOOL_FAILED, TOOL_SERVER_UNAVAILABLE, ToolError

if TYPE_CHECKING:  # python_tools uses this package's ledger: imported for types only
    from stakeflow.activities.python_tools import PythonToolbox

_tracer = trace.get_tracer("stakeflow.activities")

MAX_OUTPUT_CHARS = 20_000


class ToolActivities:
    """The ``run_tool`` activity, bound to the worker's tool limits.

    ``legacy_ledger_dir`` is the per-host ledger of the previous release (``$STAKEFLOW_HOME/ledger``),
    only read: records are kept in each workspace now. ``executors`` maps a tool's name to the
    coroutine that runs it; the built-in tools' (``activities/tools/registry.py``) unless a worker
    brings its own.
    """

    def __init__(
        self,
        tools: ToolsConfig,
        legacy_ledger_dir: Path,
        executors: Mapping[str, ToolExecutor] = EXECUTORS,
        *,
        mcp: McpToolbox | None = None,
        python: PythonToolbox | None = None,
    ) -> None:
        self._tools = tools
        self._legacy_ledger_dir = legacy_ledger_dir
        self._executors = executors
        self._mcp = mcp  # MCP servers' tools: "<server>.<tool>"
        self._python = python  # the team's Python tools

    def activities(self, role: QueueRole) -> list[Callable[..., Any]]:
        """``run_tool`` on the tools queues, and on the workflows queue (fast read-only tools as local activities)."""
        return [self.run_tool] if role in ("tools", "workflows") else []

    @activity.defn(name=RUN_TOOL)
    async def run_tool(self, req: ToolRequest) -> ToolResult:
        """Validate the arguments, run the tool, and report what happened (traced as ``execute_tool``)."""
        started = time.monotonic()
        with _tracer.start_as_current_span(
            f"{sc.SPAN_TOOL} {req.tool}",
            kind=SpanKind.INTERNAL,
            attributes={
                sc.GEN_AI_OPERATION: sc.SPAN_TOOL,
                sc.GEN_AI_TOOL_NAME: req.tool,
                sc.RUN_ID: req.run_id,
                sc.STEP: req.step,
                sc.ROUND: req.round,
                sc.ATTEMPT: activity.info().attempt if activity.in_activity() else 1,
            },
        ) as span:
            try:
                result = await heartbeating(self._execute(req))
            except ToolError as e:
                result = ToolResult(ok=False, error=_cut(str(e)))
            span.set_attributes({sc.STATUS: "ok" if result.ok else "tool_error", "stakeflow.replayed": result.replayed})
            if not result.ok:
                span.set_attribute(sc.ERROR_TYPE, "ToolRefused")
        return _capped(result).model_copy(
            update={"tool": req.tool, "duration_ms": round((time.monotonic() - started) * 1000, 3)}
        )

    async def _execute(self, req: ToolRequest) -> ToolResult:
        """The call, by the tool's source: an MCP server's, a Python tool, or a built-in."""
        if self._mcp is not None and self._mcp.serves(req.tool):
            return await self._call_mcp(req)
        if self._python is not None and self._python.serves(req.tool):
            return await self._python.call(req)
        return await self._dispatch(req, self._validate(req))

    def _validate(self, req: ToolRequest) -> BaseModel:
        spec = CATALOGUE.get(req.tool)
        if spec is None:
            raise ToolError(f"unknown tool '{req.tool}': the tools are {', '.join(sorted(CATALOGUE))}")
        enabled = self._tools.enabled
        if enabled is not None and req.tool not in enabled:
            raise ToolError(
                f"tool '{req.tool}' is not enabled on this worker: add it to [tools] enabled in stakeflow.toml"
            )
        try:
            return spec.args_model.model_validate(req.args)
        except ValidationError as e:
            raise ToolError(_describe_invalid(req.tool, spec.args_model, e)) from None

    async def _call_mcp(self, req: ToolRequest) -> ToolResult:
        assert self._mcp is not None
        try:
            return await self._mcp.call(req, idempotent=req.idempotent)
        except CallMayHaveActed as e:
            return ToolResult(ok=False, error=str(e))
        except ServerUnavailable as e:
            if not req.idempotent:  # never retried (it could act twice), and this time it did not act at all
                return ToolResult(ok=False, error=_cut(f"{e}; nothing was sent to it"))
            raise ApplicationError(_cut(f"{e}{_retrying()}"), type=TOOL_SERVER_UNAVAILABLE) from None
        except ConnectionError as e:
            raise ApplicationError(_cut(f"{e}{_retrying()}"), type=TOOL_SERVER_UNAVAILABLE) from None

    async def _dispatch(self, req: ToolRequest, args: BaseModel) -> ToolResult:
        execute = self._executors.get(req.tool)
        if execute is None:
            raise ApplicationError(
                f"tool '{req.tool}' is in the catalogue but no executor is registered for it: "
                "add its module to EXECUTORS in activities/tools/registry.py",
                type=TOOL_FAILED,
                non_retryable=True,
            )
        ctx = ToolContext(req.workspace, self._tools, self._legacy_ledger_dir, idempotency_key=req.idempotency_key)
        return await execute(args, ctx)


def _retrying() -> str:
    """What happens next to a call that failed on its connection: a retry, or none left."""
    info = activity.info() if activity.in_activity() else None
    policy = info.retry_policy if info is not None else None
    if info is None or policy is None:
        return ""
    if policy.maximum_attempts and info.attempt >= policy.maximum_attempts:
        return f"; no retries left (attempt {info.attempt} of {policy.maximum_attempts})"
    of = f" of {policy.maximum_attempts}" if policy.maximum_attempts else ""
    return f"; Temporal retries it (this was attempt {info.attempt}{of})"


def _capped(result: ToolResult) -> ToolResult:
    """The result with its output and its error each cut to ``MAX_OUTPUT_CHARS``.

    An error is capped like an output: a tool's 3 MB exception (or an MCP server's 3 MB ``isError``) would
    otherwise exceed Temporal's 2 MB payload limit, fail the attempt's completion and run the tool again.
    """
    if result.error is not None and len(result.error) > MAX_OUTPUT_CHARS:
        note = f" [error truncated: showing the first {MAX_OUTPUT_CHARS} of {len(result.error)} characters]"
        result = result.model_copy(update={"error": result.error[:MAX_OUTPUT_CHARS] + note})
    if len(result.output) <= MAX_OUTPUT_CHARS:
        return result
    note = f"\n[output truncated: showing the first {MAX_OUTPUT_CHARS} of {len(result.output)} characters]"
    return result.model_copy(update={"output": result.output[:MAX_OUTPUT_CHARS] + note, "truncated": True})


def _cut(text: str) -> str:
    return text if len(text) <= MAX_OUTPUT_CHARS else text[:MAX_OUTPUT_CHARS] + " [...]"


def _describe_invalid(tool: str, model: type[BaseModel], err: ValidationError) -> str:
    problems = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "arguments"
        if e["type"] == "missing":
            problems.append(f"'{where}' is missing")
        elif e["type"] == "extra_forbidden":
            problems.append(f"'{where}' is not an argument of {tool}")
        else:
            problems.append(f"'{where}': {e['msg']}")
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    takes = ", ".join(
        f"{name} ({prop.get('type', 'any')}{'' if name in required else ', optional'})"
        for name, prop in schema.get("properties", {}).items()
    )
    return f"invalid arguments for {tool}: {'; '.join(problems)}. {tool} takes: {takes}"
