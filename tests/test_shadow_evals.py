"""Shadow evaluation, end to end: real dev server and workers, scripted open and frontier servers that agree on
some step kinds and disagree on others; the evals rows, the report's exact figures, routing that follows them,
and no shadow (and no frontier request) for private data."""

from __future__ import annotations

import contextlib
import json

import pytest
from click.testing import CliRunner

from stakeflow.cli import cli
from stakeflow.services import runs
from stakeflow.traces import TraceStore
from tests.agent_script import agent, call, plan
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, output_schema
from tests.support import EXAMPLE_WORKSPACE, make_settings, open_endpoint_env, running_workers

SQL = "SELECT sum(units) FROM 'sales.csv'"
STEPS = [("Total the units", "sql_query")] * 4 + [("Add the margin", "calculator")] * 2


def script_for(route: str):
    """Both models run the same plan and the same SQL; on calculator steps the frontier makes two calls where the
    open model makes one (a first round must call the step's tool since issue 22, so it cannot call none)."""
    actions = {i: call("sql_query", query=SQL) for i in range(1, 5)}
    calc = call("calculator", expression="2+2")
    if route == "frontier":
        calc["tool_calls"].append({"tool": "calculator", "args": {"expression": "3*3"}})
    actions.update({5: calc, 6: calc})
    inner = agent(plan(*STEPS), actions, answer=f"answer from {route}")
    order = {"n": 0}

    def respond(body):
        schema = output_schema(body) or {}
        if "winner" in (schema.get("properties") or {}):
            # Judge: plan -> tie both ways; answer -> the frontier's (B first, then A) both ways.
            text = json.dumps(body)
            if "answer from" in text:
                order["n"] += 1
                return {"winner": "B" if order["n"] % 2 else "A", "reason": "the frontier's answer is more complete"}
            return {"winner": "tie", "reason": "equivalent plans"}
        return inner(body)

    return respond


@pytest.fixture
def fakes():
    with FakeOpenAIServer(model="qwen-test") as open_fake, FakeAnthropicServer() as frontier_fake:
        open_fake.script(script_for("open"))
        frontier_fake.script(script_for("frontier"))
        yield open_fake, frontier_fake


def settings_for(tmp_path, open_fake, frontier_fake, **policy):
    settings = make_settings(
        tmp_path,
        open_base_url=open_fake.url,
        open_model="qwen-test",
        open_dialect="vllm",
        anthropic_api_key="sk-ant-shadow-test",
        anthropic_base_url=frontier_fake.url,
        frontier_model="claude-sonnet-4-6",
    )
    settings.evals.shadow_rate = 1.0
    for key, value in policy.items():
        setattr(settings.policy, key, value)
    return settings


async def finish_shadows(client, workflow_id: str) -> int:
    """Wait for the run's shadow workflows; the number of calls they evaluated."""
    shadows = [wf async for wf in client.list_workflows(f"ParentWorkflowId = '{workflow_id}'")]
    return sum([len(await client.get_workflow_handle(wf.id).result()) for wf in shadows])


@contextlib.asynccontextmanager
async def shadowed_run(client, settings, **options):
    """The six-step run with workers up, its result and how many calls its shadows evaluated, once they are done;
    the workers stay up for the block."""
    req = runs.build_request(settings, "Units and margin", workspace=EXAMPLE_WORKSPACE, max_steps=6, **options)
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req)
        result = await handle.result()
        yield result, await finish_shadows(client, handle.id)


def evals_rows(settings) -> list[tuple]:
    with TraceStore(settings.traces_path).reader() as con:
        return con.execute("SELECT step, kind, tool, verdict, method FROM evals ORDER BY step").fetchall()


async def test_shadowing_records_each_comparison_and_routing_follows_the_figures(client, tmp_path, fakes, monkeypatch):
    open_fake, frontier_fake = fakes
    settings = settings_for(tmp_path, open_fake, frontier_fake)
    async with shadowed_run(client, settings) as (result, shadowed):
        assert shadowed == 8  # plan, 6 steps, answer
    # The run itself is untouched: every step on the open model, the open model's answer, its own bill.
    assert {s.route for s in result.steps} == {"open"} and result.answer == "answer from open"
    assert result.cost.frontier_calls == 0
    assert evals_rows(settings) == [
        (0, "plan", "", "tie", "judge"),
        *[(i, "step", "sql_query", "agree", "exact") for i in range(1, 5)],
        (5, "step", "calculator", "disagree", "exact"),
        (6, "step", "calculator", "disagree", "exact"),
        (7, "answer", "", "frontier_better", "judge"),
    ]
    monkeypatch.setenv("STAKEFLOW_HOME", str(settings.home))
    out = CliRunner().invoke(cli, ["evals", "--by", "tool", "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    by_tool = {r["tool"]: r for r in json.loads(out.output)["rows"]}
    assert (by_tool["sql_query"]["n"], by_tool["sql_query"]["agreeing"]) == (4, 4)
    assert (by_tool["calculator"]["n"], by_tool["calculator"]["agreeing"]) == (2, 0)
    assert (by_tool[""]["n"], by_tool[""]["agreeing"], by_tool[""]["judged"]) == (2, 1, 2)
    assert by_tool["sql_query"]["agreement_low"] == pytest.approx(4 / (4 + 1.96**2), abs=1e-4)  # Wilson, n = 4

    # The next run routes the kind that disagreed to the frontier, citing the figure; the other stays open.
    routed = settings_for(tmp_path, open_fake, frontier_fake, min_agreement=0.5, min_samples=2)
    routed.evals.shadow_rate = 0.0
    routed.evals.max_usd_per_day = None
    req = runs.build_request(routed, "Units and margin again", workspace=EXAMPLE_WORKSPACE, max_steps=6)
    async with running_workers(client, routed):
        result = await (await runs.start_run(client, routed, req)).result()
    sql_step, calc_step = result.steps[0], result.steps[4]
    assert (
        sql_step.route == "open" and "open path agreed on 100% of 4 sql_query steps (51–100%) >= 50%" in sql_step.reason
    )
    assert calc_step.route == "frontier"
    assert "open path agreed on 0% of 2 calculator steps (0–66%) < 50%" in calc_step.reason
    # The bill says what the saving cost in quality.
    assert "open path agreement 62% (31–86%, n=8, last 7d)" in result.cost.agreement
    out = CliRunner().invoke(cli, ["evals", "--routing", "--json"], catch_exceptions=False)
    assert out.exit_code == 0


async def test_private_data_is_never_shadowed(client, tmp_path, fakes):
    open_fake, frontier_fake = fakes
    settings = settings_for(tmp_path, open_fake, frontier_fake)
    async with shadowed_run(client, settings, sensitivity="private") as (_, shadowed):
        assert shadowed == 0
    assert frontier_fake.calls == []  # not one request: no shadow, no judge
    assert evals_rows(settings) == []


async def test_the_daily_budget_stops_sampling_when_spent(client, tmp_path, fakes):
    open_fake, frontier_fake = fakes
    settings = settings_for(tmp_path, open_fake, frontier_fake)
    settings.evals.max_usd_per_day = 0.0
    async with shadowed_run(client, settings):
        pass
    assert evals_rows(settings) == []
    assert frontier_fake.calls == []  # budget refused before any frontier call


async def test_frontier_calls_a_shadow_could_not_use_are_still_charged_to_its_budget(client, tmp_path, fakes):
    """The frontier answers in text, never with the output tool: every plan and step reference is invalid output
    (not retried), and the answer's judge gives no verdict (a tie). Those calls were billed all the same: the shadow
    budget settles what the shadow's spans say it spent, not $0."""
    from stakeflow.agents.budgets import SHADOW_BUDGET
    from stakeflow.agents.types import Usage
    from stakeflow.prices import PriceTable
    from stakeflow.services.budgets import budget_items

    open_fake, frontier_fake = fakes
    frontier_fake.script(lambda body: "I would rather explain in prose.")
    settings = settings_for(tmp_path, open_fake, frontier_fake)
    settings.evals.max_usd_per_day = 5.0
    async with shadowed_run(client, settings):
        (shadow,) = [b for b in await budget_items(client, settings) if b["name"] == SHADOW_BUDGET]
    # Every frontier reply reports the fake's usage (100 tokens in, 20 out): each call costs the same.
    each = PriceTable.from_settings(settings).price_call(
        "claude-sonnet-4-6", Usage(input_tokens=100, output_tokens=20, requests=1), 0
    )
    # The plan's and six steps' references (invalid, not retried), the answer's (text, as asked), and its judge
    # (invalid: no second order is asked).
    assert len(frontier_fake.calls) == 7 + 1 + 1
    assert shadow["settled"] == pytest.approx(9 * each.usd) and shadow["reserved"] == 0
    assert evals_rows(settings) == [(7, "answer", "", "tie", "judge")]  # the one call with a reference


async def test_a_worker_killed_during_a_shadow_leaves_one_completed_shadow_and_one_row(client, tmp_path, fakes):
    import asyncio
    import signal
    import time
    import uuid

    from tests.fakes import Reply
    from tests.support import spawn_worker, worker_env, worker_log

    open_fake, frontier_fake = fakes
    frontier_inner = script_for("frontier")
    frontier_fake.script(lambda body: Reply.delayed(3, frontier_inner(body)))  # shadows take a while
    home = tmp_path / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text("[evals]\nshadow_rate = 1.0\n")
    prefix = f"t{uuid.uuid4().hex[:8]}"
    env = worker_env(
        home,
        client,
        prefix,
        **open_endpoint_env(open_fake.url),
        ANTHROPIC_API_KEY="sk-ant-shadow-test",
        ANTHROPIC_BASE_URL=frontier_fake.url,
    )
    settings = settings_for(tmp_path, open_fake, frontier_fake)
    settings.queue_prefix = prefix
    open_fake.script(agent(plan(("Total the units", "sql_query")), {1: call("sql_query", query=SQL)}, answer="done"))
    worker = spawn_worker(env)
    try:
        req = runs.build_request(settings, "Units", workspace=EXAMPLE_WORKSPACE)
        req.heartbeat_timeout_s = 3  # a shadow whose worker died is retried after 3 s, not 30
        handle = await runs.start_run(client, settings, req)
        await handle.result()
        deadline = time.monotonic() + 30
        while len(frontier_fake.calls) < 2:  # shadows are mid-call at the frontier
            assert time.monotonic() < deadline, "no shadow reached the frontier"
            await asyncio.sleep(0.1)
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
        worker = spawn_worker(env)
        shadows = [wf async for wf in client.list_workflows(f"ParentWorkflowId = '{handle.id}'")]
        results = [r for wf in shadows for r in await client.get_workflow_handle(wf.id).result()]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    assert worker.returncode == 0, worker_log(env)
    assert len(shadows) == 1 and len(results) == 3  # plan, step 1, answer: one shadow workflow, completed once
    assert all(r is not None for r in results)
    with TraceStore(home / "traces.duckdb").reader() as con:
        rows = con.execute("SELECT eval_id, count(*) FROM evals GROUP BY 1 ORDER BY 1").fetchall()
    assert [n for _, n in rows] == [1, 1, 1]
