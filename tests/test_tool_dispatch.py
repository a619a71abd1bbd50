"""The run_tool dispatcher, called directly: what every tool call shares.

Arguments validated against the catalogue, the executor looked up by name and given its context,
the output cap, and the ``execute_tool`` span every call leaves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import timedelta
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from stakeflow.activities.tools import EXECUTORS, MAX_OUTPUT_CHARS, ToolActivities, ToolContext, dispatcher
from stakeflow.agents.tools import CATALOGUE, CalculatorArgs
from stakeflow.agents.types import ToolRequest, ToolResult
from stakeflow.config import ToolsConfig
from stakeflow.core.errors import TOOL_FAILED
from tests.tool_cases import refused, run, tools_config, ws  # noqa: F401 (ws is a fixture)


async def test_unknown_tool_is_refused_and_names_the_tools() -> None:
    result = await run("rm", {"path": "x"})
    assert result.tool == "rm"
    assert refused(result) == "unknown tool 'rm': the tools are calculator, http_get, read_file, sql_query, write_file"


async def test_missing_argument_is_refused_with_the_expected_arguments() -> None:
    error = refused(await run("write_file", {"path": "a.txt"}))
    assert error == (
        "invalid arguments for write_file: 'content' is missing. "
        "write_file takes: path (string), content (string), append (boolean, optional)"
    )


async def test_extra_argument_is_refused() -> None:
    error = refused(await run("calculator", {"expression": "1+1", "shell": "ls"}))
    assert error == (
        "invalid arguments for calculator: 'shell' is not an argument of calculator. "
        "calculator takes: expression (string)"
    )


async def test_tool_not_enabled_on_the_worker_is_refused(ws: Path) -> None:
    (ws / "a.txt").write_text("secret")
    error = refused(await run("read_file", {"path": "a.txt"}, workspace=ws, config=ToolsConfig(enabled=["calculator"])))
    assert error == "tool 'read_file' is not enabled on this worker: add it to [tools] enabled in stakeflow.toml"


async def test_runs_as_a_temporal_activity_and_times_itself() -> None:
    acts = ToolActivities(ToolsConfig(), Path("/nonexistent-ledger"))
    req = ToolRequest(tool="calculator", args={"expression": "6*7"})
    result = await ActivityEnvironment().run(acts.run_tool, req)
    assert (result.tool, result.ok, result.output, result.error) == ("calculator", True, "6*7 = 42", None)
    assert result.duration_ms > 0


async def test_output_is_cut_to_the_history_limit(ws: Path) -> None:
    (ws / "big.txt").write_text("ab" * MAX_OUTPUT_CHARS)
    config = tools_config(read_file=10 * MAX_OUTPUT_CHARS)
    result = await run("read_file", {"path": "big.txt"}, workspace=ws, config=config)
    assert result.ok and result.truncated
    assert result.output == (
        "ab" * (MAX_OUTPUT_CHARS // 2)
        + f"\n[output truncated: showing the first {MAX_OUTPUT_CHARS} of {2 * MAX_OUTPUT_CHARS} characters]"
    )


async def test_an_error_is_cut_to_the_history_limit_like_an_output() -> None:
    async def failing(args: CalculatorArgs, ctx: ToolContext) -> ToolResult:
        return ToolResult(ok=False, error="e" * 3_000_000)

    acts = ToolActivities(ToolsConfig(), Path("/nonexistent-ledger"), executors={"calculator": failing})
    result = await acts.run_tool(ToolRequest(tool="calculator", args={"expression": "1"}))
    assert result.error == (
        "e" * MAX_OUTPUT_CHARS + f" [error truncated: showing the first {MAX_OUTPUT_CHARS} of 3000000 characters]"
    )


async def test_a_tool_call_heartbeats_while_it_runs() -> None:
    # A worker that dies (or stalls) mid-call is noticed within the activity's heartbeat timeout
    # instead of its 60 s start-to-close timeout: the call's retry goes elsewhere sooner.
    async def slow(args: CalculatorArgs, ctx: ToolContext) -> ToolResult:
        await asyncio.sleep(1.0)
        return ToolResult(output="slow")

    acts = ToolActivities(ToolsConfig(), Path("/nonexistent-ledger"), executors={"calculator": slow})
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(seconds=0.3))
    beats: list[float] = []
    env.on_heartbeat = lambda *details: beats.append(time.monotonic())
    result = await env.run(acts.run_tool, ToolRequest(tool="calculator", args={"expression": "1"}))
    assert result.output == "slow"
    assert len(beats) >= 5  # every 0.1 s (a third of the timeout) over 1 s


async def test_a_local_tool_call_does_not_heartbeat() -> None:
    # Local activities cannot heartbeat; their timeout is the workflow task's business.
    async def slow(args: CalculatorArgs, ctx: ToolContext) -> ToolResult:
        await asyncio.sleep(0.5)
        return ToolResult(output="slow")

    acts = ToolActivities(ToolsConfig(), Path("/nonexistent-ledger"), executors={"calculator": slow})
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(seconds=0.3), is_local=True)
    beats: list[object] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    result = await env.run(acts.run_tool, ToolRequest(tool="calculator", args={"expression": "1"}))
    assert (result.output, beats) == ("slow", [])


# --- registration ---------------------------------------------------------------------------


def test_every_catalogue_tool_has_an_executor_and_no_executor_lacks_a_spec() -> None:
    assert sorted(EXECUTORS) == sorted(CATALOGUE)


async def test_executor_is_looked_up_by_name_and_given_the_validated_args_and_context(tmp_path: Path) -> None:
    seen: list[tuple[object, ToolContext]] = []

    async def fake_calculator(args: CalculatorArgs, ctx: ToolContext) -> ToolResult:
        seen.append((args, ctx))
        return ToolResult(output="from the fake")

    config = ToolsConfig()
    acts = ToolActivities(config, tmp_path / "ledger", executors={"calculator": fake_calculator})
    req = ToolRequest(tool="calculator", args={"expression": "1+1"}, workspace="/some/ws", idempotency_key="w/1/0")
    result = await acts.run_tool(req)
    assert (result.ok, result.output, result.tool) == (True, "from the fake", "calculator")
    assert seen == [
        (
            CalculatorArgs(expression="1+1"),
            ToolContext(
                workspace="/some/ws", config=config, legacy_ledger_dir=tmp_path / "ledger", idempotency_key="w/1/0"
            ),
        )
    ]


async def test_catalogue_tool_without_an_executor_is_a_non_retryable_failure() -> None:
    acts = ToolActivities(ToolsConfig(), Path("/nonexistent-ledger"), executors={})
    with pytest.raises(ApplicationError) as caught:
        await acts.run_tool(ToolRequest(tool="calculator", args={"expression": "1+1"}))
    assert caught.value.type == TOOL_FAILED
    assert caught.value.non_retryable is True
    assert caught.value.message == (
        "tool 'calculator' is in the catalogue but no executor is registered for it: "
        "add its module to EXECUTORS in activities/tools/registry.py"
    )


# --- the execute_tool span ------------------------------------------------------------------


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """The dispatcher's spans, collected in memory (the process's global provider is left alone)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(dispatcher, "_tracer", provider.get_tracer("stakeflow.activities"))
    return memory


async def test_each_call_leaves_one_execute_tool_span(spans: InMemorySpanExporter) -> None:
    acts = ToolActivities(ToolsConfig(), Path("/nonexistent-ledger"))
    await acts.run_tool(ToolRequest(run_id="run-7", step=2, tool="calculator", args={"expression": "6*7"}))
    await acts.run_tool(ToolRequest(run_id="run-7", step=3, tool="calculator", args={"expression": "1/0"}))
    [ok, refusal] = spans.get_finished_spans()
    common = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "calculator", "stakeflow.run_id": "run-7"}
    common["stakeflow.round"] = 1
    assert (ok.name, dict(ok.attributes)) == (
        "execute_tool calculator",
        {**common, "stakeflow.step": 2, "stakeflow.attempt": 1, "stakeflow.status": "ok", "stakeflow.replayed": False},
    )
    assert (refusal.name, dict(refusal.attributes)) == (
        "execute_tool calculator",
        {
            **common,
            "stakeflow.step": 3,
            "stakeflow.attempt": 1,
            "stakeflow.status": "tool_error",
            "stakeflow.replayed": False,
            "error.type": "ToolRefused",
        },
    )
