"""The frontier's prompt cache: breakpoints on the stable prefix of every call, cached tokens priced as the price
table says (reads at the cache-read rate, writes at the cache-write rate), and the saving on the run's bill.

The Anthropic fake bills input as the API does (tests/fakes PromptCache): what an earlier request wrote at a
breakpoint is read, later breakpoints are written, the rest is uncached.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from stakeflow.activities.models import ModelActivities
from stakeflow.activities.parameters import ModelParameters
from stakeflow.agents import prompts
from stakeflow.agents.billing import cost_line
from stakeflow.agents.tools import CATALOGUE
from stakeflow.agents.types import (
    CostSummary,
    ModelCallRequest,
    ModelEndpoint,
    RoundTurn,
    StepAction,
    StepRecord,
    ToolCall,
    ToolResult,
)
from stakeflow.config import Settings
from tests.agent_script import agent, call, plan
from tests.fakes import FakeAnthropicServer, PromptCache, purpose_of
from tests.test_agent_loop import BAD_QUERY, GOAL, GOOD_QUERY
from tests.workflow_support import open_fake, run_task, settings_for, workspace  # noqa: F401

EPHEMERAL = {"type": "ephemeral", "ttl": "5m"}
# claude-sonnet-4-6 in the built-in table, USD per token: input, output, cache write (5 min), cache read
IN, OUT, WRITE, READ = 3e-6, 15e-6, 3.75e-6, 0.3e-6


@pytest.fixture(autouse=True)
def no_model_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("STAKEFLOW_", "ANTHROPIC_", "OPENAI_")):
            monkeypatch.delenv(name)


# --- the fake's cache, so what the benchmark measures is Anthropic's rule ---------------------------------------


def _request(*blocks: tuple[str, bool], model: str = "m") -> dict[str, Any]:
    content = [{"type": "text", "text": t, **({"cache_control": EPHEMERAL} if mark else {})} for t, mark in blocks]
    return {"model": model, "system": "S", "messages": [{"role": "user", "content": content}]}


def test_the_fake_writes_at_breakpoints_and_reads_the_longest_prefix_written():
    cache = PromptCache(min_tokens=100, chars_per_token=1)
    head, one, two = "h" * 150, "a" * 50, "b" * 60
    block = len('["user", {"text": "", "type": "text"}]')  # each block's JSON around its text
    system = len('["system", {"text": "S", "type": "text"}]')
    first = cache.usage(_request((head, True), (one, True), ("ask", False)))
    # both breakpoints are long enough: written up to the last one; the ask is uncached
    assert first == {
        "input_tokens": block + 3,
        "cache_creation_input_tokens": system + 2 * block + 200,
        "cache_read_input_tokens": 0,
    }
    # the next step: same head and first step, a second step, a new ask; its breakpoint is one block further on,
    # and the lookback finds the prefix the first request wrote
    second = cache.usage(_request((head, True), (one, False), (two, True), ("ask 2", False)))
    assert second["cache_read_input_tokens"] == system + 2 * block + 200
    assert second["cache_creation_input_tokens"] == block + 60
    # one changed character in the head: nothing is read
    assert cache.usage(_request(("x" + head[1:], True), ("ask", False)))["cache_read_input_tokens"] == 0
    # another model has another cache
    assert cache.usage(_request((head, True), ("ask", False), model="other"))["cache_read_input_tokens"] == 0


def test_a_prefix_under_the_minimum_is_neither_written_nor_read():
    cache = PromptCache(min_tokens=1024)
    for _ in range(2):
        assert cache.usage(_request(("short", True), ("ask", False)))["cache_creation_input_tokens"] == 0
    assert cache.log[1]["cache_read_input_tokens"] == 0


# --- call_model: the breakpoints, and the price of what was cached ---------------------------------------------


def _step_call(rounds: list[RoundTurn]) -> ModelCallRequest:
    done = [
        StepRecord(
            index=1,
            title="Read the notes",
            status="ok",
            result="read them",
            tool_results=[ToolResult(tool="read_file", output="The notes say many things. " * 200)],
        )
    ]
    spec = CATALOGUE["sql_query"].view()
    blocks = prompts.step_prompt_blocks(GOAL, 2, 2, "Sum the revenue", spec, done, ["sales.csv", "notes.txt"])
    return ModelCallRequest(
        run_id="run-1",
        step=2,
        purpose="step",
        round=len(rounds) + 1,
        rounds=rounds,
        endpoint=ModelEndpoint(route="frontier"),
        system=prompts.STEP_SYSTEM,
        prompt="".join(blocks),
        prompt_blocks=prompts.block_ends(blocks),
        tools=[spec],
        max_output_tokens=256,
    )


async def test_a_frontier_step_marks_its_stable_prefix_and_pays_cache_rates(tmp_path: Path):
    with FakeAnthropicServer(cache=PromptCache()) as server:
        server.enqueue(call("sql_query", query=BAD_QUERY), call("sql_query", query=GOOD_QUERY))
        settings = Settings(
            home=tmp_path,
            anthropic_api_key="sk-ant-test-0123456789",
            anthropic_base_url=server.url,
            frontier_model="claude-sonnet-4-6",
        )
        models = ModelActivities(ModelParameters.from_settings(settings))
        first = await models.call_model(_step_call([]))
        failed = RoundTurn(
            action=StepAction(tool_calls=[ToolCall(tool="sql_query", args={"query": BAD_QUERY})]),
            results=[ToolResult(tool="sql_query", ok=False, error='Binder Error: column "revenue" not found')],
        )
        second = await models.call_model(_step_call([failed]))
        await models.close()
        bodies = [c.body for c in server.calls]

    # The breakpoints: the system prompt (and the output tool before it), the run's head, the last earlier step,
    # the end of the conversation: Anthropic's four.
    body = bodies[0]
    assert body["system"][0]["cache_control"] == EPHEMERAL
    [prompt] = body["messages"]
    marked = [b["text"][:20] for b in prompt["content"] if "cache_control" in b]
    assert marked == ["Goal: What was the t", "Step 1: Read the not", "\n\nNow step 2 of 2: S"]
    assert "".join(b["text"] for b in prompt["content"]) == _step_call([]).prompt  # the same text, in blocks
    assert "cache_control" in bodies[1]["messages"][-1]["content"][-1]  # round 2: the end of its conversation

    # Round 1 wrote the prefix, round 2 read all of it: priced at the table's cache rates.
    one, two = server.cache.log
    assert one["cache_read_input_tokens"] == 0 and one["cache_creation_input_tokens"] > 1024
    assert two["cache_read_input_tokens"] == one["cache_creation_input_tokens"] + one["input_tokens"]
    assert second.usage.cache_read_tokens == two["cache_read_input_tokens"]
    assert second.usage.cache_write_tokens == two["cache_creation_input_tokens"]
    assert second.usage.input_tokens == two["input_tokens"]
    paid = two["input_tokens"] * IN + two["cache_creation_input_tokens"] * WRITE + two["cache_read_input_tokens"] * READ
    assert second.cost.usd == pytest.approx(paid + 20 * OUT, abs=1e-9)
    uncached = (two["input_tokens"] + two["cache_creation_input_tokens"] + two["cache_read_input_tokens"]) * IN
    assert second.cost.cache_saved_usd == pytest.approx(uncached - paid, abs=1e-9)
    # a write that nothing has read yet costs a quarter more than the same tokens uncached
    assert first.cost.cache_saved_usd == pytest.approx(-one["cache_creation_input_tokens"] * (WRITE - IN), abs=1e-9)


async def test_the_open_route_gets_one_text_and_no_breakpoints(tmp_path: Path):
    from tests.fakes import FakeOpenAIServer

    with FakeOpenAIServer(model="served") as server:
        server.enqueue(call("sql_query", query=GOOD_QUERY))
        settings = Settings(home=tmp_path, open_base_url=server.url, open_model="served", open_dialect="vllm")
        models = ModelActivities(ModelParameters.from_settings(settings))
        req = _step_call([]).model_copy(update={"endpoint": ModelEndpoint(route="open")})
        await models.call_model(req)
        await models.close()
        [sent] = server.calls
    assert sent.body["messages"][-1]["content"] == req.prompt
    assert "cache_control" not in sent.raw


async def test_every_round_of_a_frontier_step_sends_one_schema_and_round_one_still_must_call(tmp_path: Path):
    """Anthropic caches the tools first: the output tool's schema is the same in every round (round 1's required
    call is checked on the answer), or round 2 could read nothing round 1 wrote."""
    from temporalio.exceptions import ApplicationError

    from stakeflow.core.errors import MODEL_OUTPUT_INVALID

    with FakeAnthropicServer() as server:
        server.enqueue({"tool_calls": [], "result": "nothing to do"}, call("sql_query", query=GOOD_QUERY))
        settings = Settings(
            home=tmp_path, anthropic_api_key="sk-ant-test-0123456789", anthropic_base_url=server.url, frontier_model="m"
        )
        models = ModelActivities(ModelParameters.from_settings(settings))
        with pytest.raises(ApplicationError) as info:
            await models.call_model(_step_call([]).model_copy(update={"require_tool_call": True}))
        await models.call_model(_step_call([]))
        await models.close()
        first, second = (c.body["tools"] for c in server.calls)
    assert info.value.type == MODEL_OUTPUT_INVALID
    assert "tool_calls: List should have at least 1 item" in info.value.message
    assert first == second


# --- the bill -------------------------------------------------------------------------------------------------


def test_the_bill_shows_what_the_cache_saved():
    c = CostSummary(frontier_usd=0.0312, frontier_equivalent_usd=0.0312, frontier_calls=5, cache_saved_usd=0.0123)
    assert " · cache saved $0.0123" in cost_line(c)
    assert "cache" not in cost_line(CostSummary(frontier_usd=0.01, frontier_equivalent_usd=0.01, frontier_calls=1))
    costly = CostSummary(frontier_usd=0.01, frontier_equivalent_usd=0.01, frontier_calls=1, cache_saved_usd=-0.0004)
    assert " · cache writes cost $0.0004 more" in cost_line(costly)


async def test_a_frontier_run_reads_its_cache_and_its_bill_says_so(client, tmp_path, open_fake, workspace):
    """Two rounds of a step on the frontier: the second reads what the first wrote. The prompts of this run are
    short, so the fake caches prefixes from 256 tokens (the API's minimum is 1,024 or more)."""
    with FakeAnthropicServer(cache=PromptCache(min_tokens=256)) as frontier:
        frontier.script(
            agent(
                plan(("Sum the revenue", "sql_query", "high")),
                {1: [call("sql_query", query=BAD_QUERY), call("sql_query", query=GOOD_QUERY)]},
                answer="16330",
            )
        )
        open_fake.script(agent(None, {}, answer="16330"))
        settings = settings_for(tmp_path, open_fake, frontier, frontier_model="claude-sonnet-4-6")
        result = await run_task(client, settings, GOAL, workspace=workspace, stakes="high")
        log = frontier.cache.log
    assert result.status == "completed" and [r.round for r in result.steps[0].rounds] == [1, 2]
    assert any(entry["cache_read_input_tokens"] for entry in log)
    assert result.usage.cache_read_tokens == sum(e["cache_read_input_tokens"] for e in log)
    assert result.cost.cache_saved_usd > 0
    assert f"cache saved ${result.cost.cache_saved_usd:.4f}" in cost_line(result.cost)


async def test_every_step_of_a_frontier_run_sends_one_schema_so_the_next_step_reads_the_last(
    client, tmp_path, open_fake, workspace
):
    """Steps with different tools: each sends the plan's tools as one output-tool schema (the tools come first in
    Anthropic's cache), so step 2 reads the prefix step 1 wrote instead of writing it all again."""
    with FakeAnthropicServer(cache=PromptCache(min_tokens=256)) as frontier:
        frontier.script(
            agent(
                plan(("Read the sales", "read_file", "high"), ("Sum the revenue", "sql_query", "high")),
                {1: call("read_file", path="sales.csv"), 2: call("sql_query", query=GOOD_QUERY)},
                answer="16330",
            )
        )
        open_fake.script(agent(None, {}, answer="16330"))
        settings = settings_for(tmp_path, open_fake, frontier, frontier_model="claude-sonnet-4-6")
        result = await run_task(client, settings, GOAL, workspace=workspace, stakes="high")
        steps = [
            (c.body, e) for c, e in zip(frontier.calls, frontier.cache.log, strict=True) if purpose_of(c.body) == "step"
        ]
    assert result.status == "completed" and [s.status for s in result.steps] == ["ok", "ok"]
    (one, one_cache), (two, two_cache) = steps
    assert one["tools"] == two["tools"]
    assert {v["properties"]["tool"]["const"] for v in _call_variants(two["tools"][0])} == {"read_file", "sql_query"}
    assert one_cache["cache_creation_input_tokens"] > 0
    assert two_cache["cache_read_input_tokens"] > 0


def _call_variants(tool: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool-call shapes an output tool's schema offers (its tool_calls items, resolved through $defs)."""
    schema = tool["input_schema"]
    items = schema["properties"]["tool_calls"]["items"]
    refs = items.get("anyOf") or items.get("oneOf") or [items]
    return [schema["$defs"][r["$ref"].rsplit("/", 1)[-1]] if "$ref" in r else r for r in refs]


async def test_a_frontier_step_that_calls_another_steps_tool_is_invalid_output(tmp_path: Path):
    """The shared schema offers every tool of the plan; the step's own tool is still the only one it may call."""
    from temporalio.exceptions import ApplicationError

    from stakeflow.core.errors import MODEL_OUTPUT_INVALID

    with FakeAnthropicServer() as server:
        server.enqueue(call("read_file", path="sales.csv"))
        settings = Settings(
            home=tmp_path, anthropic_api_key="sk-ant-test-0123456789", anthropic_base_url=server.url, frontier_model="m"
        )
        models = ModelActivities(ModelParameters.from_settings(settings))
        shared = [CATALOGUE["read_file"].view(), CATALOGUE["sql_query"].view()]
        with pytest.raises(ApplicationError) as info:
            await models.call_model(_step_call([]).model_copy(update={"shared_tools": shared}))
        await models.close()
        [sent] = server.calls
    assert {v["properties"]["tool"]["const"] for v in _call_variants(sent.body["tools"][0])} == {
        "read_file",
        "sql_query",
    }
    assert info.value.type == MODEL_OUTPUT_INVALID


def test_the_shared_schema_is_bounded_whatever_the_plan_names():
    """A plan naming many large tools: past MAX_SHARED_TOOLS_CHARS each step sends its own tool alone."""
    from stakeflow.agents.types import ToolSpecView
    from stakeflow.workflows.step_loop import MAX_SHARED_TOOLS_CHARS, shared_tools

    big = {"type": "object", "properties": {f"arg{n}": {"type": "string", "description": "x" * 200} for n in range(20)}}
    specs = {f"mcp.tool{n}": ToolSpecView(name=f"mcp.tool{n}", description="d", args_schema=big) for n in range(40)}
    specs["read_file"] = CATALOGUE["read_file"].view()
    steps = [StepRecord(index=n, tools=[name]) for n, name in enumerate(specs, start=1)]
    assert sum(len(t.model_dump_json()) for t in specs.values()) > MAX_SHARED_TOOLS_CHARS
    assert shared_tools(steps, specs, ["a.txt"]) == []
    few = shared_tools(steps[-2:], specs, ["a.txt", "b.txt"])  # mcp.tool39 and read_file, by name
    assert [t.name for t in few] == ["mcp.tool39", "read_file"]
    assert few[1].args_schema["properties"]["path"]["enum"] == ["a.txt", "b.txt"]


def test_a_step_prompt_starts_as_the_last_one_did_except_where_the_window_jumps():
    """The prompt cache reads a prefix the step before wrote: a window sliding one step at a time changed the
    older steps' block on every frontier step from the 7th (bench/prompt_cache.py: 10 steps cost 0.54 of
    uncached)."""
    done = [
        StepRecord(index=i, title=f"Look up part {i}", tools=["read_file"], status="ok", result=f"found part {i}")
        for i in range(1, 21)
    ]

    def stable(n: int) -> str:  # step n+1's prompt up to the end of its last earlier step's block
        blocks = prompts.step_prompt_blocks(GOAL, n + 1, 21, "next", None, done[:n], jumps=True)
        return "".join(blocks[:-1])

    reread = [n for n in range(1, 20) if stable(n + 1).startswith(stable(n))]
    assert reread == [n for n in range(1, 20) if n + 1 not in (10, 15, 20)]
    for n in range(1, 21):
        full = n - prompts.shown_as_lines(n)
        assert full == n if n < 10 else 5 <= full <= 9
        assert stable(n).count("  note: found part") == full  # the rest are one line each
        # The open route's prompt keeps a small model's context: never more than 5 steps in full.
        shown = "".join(prompts.step_prompt_blocks(GOAL, n + 1, 21, "next", None, done[:n]))
        assert shown.count("  note: found part") == min(n, prompts.RECENT_STEPS)
