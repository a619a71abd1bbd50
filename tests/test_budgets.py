"""Frontier budgets in dollars (issue 24): each frontier call reserves its worst case before it is sent and settles
its cost after; a spent budget downgrades the step, waits for a person, or fails the run, as configured.

Real dev server and workers; the frontier is FakeAnthropicServer, billing each call by the size of what it was sent.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import date, timedelta

import pytest
from temporalio.client import WorkflowFailureError

from stakeflow.activities import budgets as activity_budgets
from stakeflow.agents.billing import cost_line
from stakeflow.agents.budgets import GLOBAL_BUDGET, RUN_BUDGET, BudgetTotals, budget_workflow_id
from stakeflow.agents.types import ApprovalRequest, TaskResult
from stakeflow.config import PriceConfig
from stakeflow.core.contracts import APPROVE_UPDATE, BUDGET_QUERY
from stakeflow.services import runs
from stakeflow.services.render import progress_lines
from tests.agent_script import agent, plan, think
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, Reply
from tests.support import make_settings, running_workers, wait_for_approval

# $3 / $15 per million tokens: a call of ~1,000 input and 600 output tokens costs about $0.012.
PRICE = {"claude-test": PriceConfig(input_per_mtok=3.0, output_per_mtok=15.0)}
OUTPUT_TOKENS = 600


def billed(respond):
    """The scripted frontier, reporting (and so billing) input tokens as a quarter of the request's bytes."""

    def answer(body):
        item = respond(body)
        reply = item if isinstance(item, Reply) else Reply(output=item)
        if reply.status < 400:
            reply.usage = {"input_tokens": len(json.dumps(body)) // 4, "output_tokens": OUTPUT_TOKENS}
        return reply

    return answer


def cost_of(request) -> float:
    """What the fake billed for one request it answered (its own log is the truth)."""
    return (len(json.dumps(request.body)) // 4) * 3.0 / 1e6 + OUTPUT_TOKENS * 15.0 / 1e6


def thinking_steps(n: int):
    return agent(plan(*[(f"Think {i}", None, "high") for i in range(1, n + 1)]), {i: think(f"thought {i}") for i in range(1, n + 1)}, "done")  # fmt: skip


@pytest.fixture
def fakes():
    with FakeOpenAIServer(model="qwen-test") as open_fake, FakeAnthropicServer() as frontier_fake:
        open_fake.script(thinking_steps(6))
        frontier_fake.script(billed(thinking_steps(6)))
        yield open_fake, frontier_fake


def settings_for(tmp_path, open_fake, frontier_fake, **kw):
    return make_settings(
        tmp_path,
        open_base_url=open_fake.url,
        open_model="qwen-test",
        open_dialect="vllm",
        anthropic_api_key="sk-ant-test-budgets",
        anthropic_base_url=frontier_fake.url,
        frontier_model="claude-test",
        prices=PRICE,
        **kw,
    )


started_ids: set[str] = set()


async def start(client, settings, goal="Think hard", **kw):
    req = runs.build_request(settings, goal, **kw)
    handle = await runs.start_run(client, settings, req, f"budget-{uuid.uuid4().hex[:8]}")
    started_ids.add(handle.id)
    return handle


async def test_run_usd_stops_a_run_s_frontier_spend_at_its_cap(client, tmp_path, fakes):
    open_fake, frontier_fake = fakes
    settings = settings_for(tmp_path, open_fake, frontier_fake)
    async with running_workers(client, settings):
        result: TaskResult = await (await start(client, settings, budget_usd=0.02)).result()
    spent = sum(cost_of(r) for r in frontier_fake.calls)
    uncapped = 7 * cost_of(frontier_fake.calls[0])  # six high-stakes steps and the answer, all on the frontier
    assert uncapped > 3 * 0.02 and 0 < spent <= 0.02
    assert round(result.cost.frontier_usd, 9) == round(spent, 9)
    downgraded = [s for s in result.steps if s.downgraded]
    assert downgraded and all(s.route == "open" for s in downgraded)
    assert (
        f"downgraded: frontier budget {RUN_BUDGET} $0.02 spent (${spent:.2f} + $0.00 reserved)" in downgraded[0].reason
    )
    assert result.cost.budgets == [RUN_BUDGET] and cost_line(result.cost).endswith(" · budgets run_usd")


async def budget_state(client, settings, day) -> BudgetTotals:
    handle = client.get_workflow_handle(budget_workflow_id(settings.queue_prefix, GLOBAL_BUDGET, day))
    return await handle.query(BUDGET_QUERY, result_type=BudgetTotals)


async def test_a_spent_day_budget_downgrades_waits_for_approval_or_fails_and_the_next_day_opens_anew(
    client, tmp_path, fakes, monkeypatch
):
    open_fake, frontier_fake = fakes
    earlier = set(started_ids)  # runs of other tests in this session
    day, next_day = date.today().isoformat(), (date.today() + timedelta(days=1)).isoformat()
    monkeypatch.setattr(activity_budgets, "today", lambda: day)
    settings = settings_for(tmp_path, open_fake, frontier_fake, budgets={"frontier_usd_per_day": 0.04})
    async with running_workers(client, settings):
        first: TaskResult = await (await start(client, settings)).result()
        state = await budget_state(client, settings, day)
        spent = sum(cost_of(r) for r in frontier_fake.calls)
        assert 0 < spent <= 0.04 and round(state.settled_usd, 9) == round(spent, 9) and state.reserved_usd == 0
        reason = f"downgraded: frontier budget {GLOBAL_BUDGET} $0.04 spent (${state.settled_usd:.2f} + $0.00 reserved)"
        assert reason in first.steps[-1].reason and first.steps[-1].route == "open"
        assert any(n.endswith(reason) for n in first.notices) and first.cost.budgets == [GLOBAL_BUDGET]

        # approve: the step waits, showing the budget and the call's cost; approved, it goes to the frontier.
        approving = settings.model_copy(
            update={"budgets": settings.budgets.model_copy(update={"on_exceeded": "approve"})}
        )
        handle = await start(client, approving)
        progress = await wait_for_approval(handle, 1)
        waiting = progress.steps[0].waiting_for
        assert waiting.startswith("frontier call (claude-test) over budget: frontier budget frontier_usd_per_day $0.04")
        assert "this call costs up to $0.0" in waiting
        calls_before = len(frontier_fake.calls)
        await handle.execute_update(APPROVE_UPDATE, ApprovalRequest(step=1, decision="approve", by="pat"))
        await wait_for_approval(handle, 2)
        assert len(frontier_fake.calls) == calls_before + 1  # step 1 ran on the frontier, approved over budget
        await handle.execute_update(APPROVE_UPDATE, ApprovalRequest(step=2, decision="reject", note="enough", by="pat"))
        for step in range(3, 8):  # the rest are rejected too: each then runs on the open model
            progress = await wait_for_approval(handle, step)
            if step == 7:  # the answer is no step of the checklist: `status` still says what waits, and how to decide
                shown = "\n".join(progress_lines(progress, handle.id))
                assert "answer waits for approval" in shown and f"stakeflow approve {handle.id} 7" in shown
            await handle.execute_update(
                APPROVE_UPDATE, ApprovalRequest(step=step, decision="reject", note="no", by="pat")
            )
        approved: TaskResult = await handle.result()
        assert approved.steps[0].route == "frontier" and approved.steps[0].approval.by == "pat"
        assert approved.steps[1].route == "open" and "over-budget call rejected" in approved.steps[1].reason

        # fail: the run fails, naming the budget.
        failing = settings.model_copy(update={"budgets": settings.budgets.model_copy(update={"on_exceeded": "fail"})})
        with pytest.raises(WorkflowFailureError) as failed:
            await (await start(client, failing)).result()
        assert "frontier budget frontier_usd_per_day $0.04 spent" in str(failed.value.cause)
        assert "([budgets] on_exceeded = fail)" in str(failed.value.cause)

        # The next UTC day is a new budget.
        monkeypatch.setattr(activity_budgets, "today", lambda: next_day)
        calls_before = len(frontier_fake.calls)
        tomorrow: TaskResult = await (await start(client, settings)).result()
        assert tomorrow.steps[0].route == "frontier" and len(frontier_fake.calls) > calls_before
        assert (await budget_state(client, settings, day)).settled_usd <= 0.04 + approved.cost.frontier_usd

        # The dashboard's budget panel shows them, as `stakeflow budgets --json` lists them.
        from stakeflow.services.report import build_report

        here = settings.model_copy(update={"temporal_address": client.service_client.config.target_host})
        page = await asyncio.to_thread(build_report, here, timedelta(days=1))
        assert "No budgets configured" not in page and 'data-figure="budget:frontier_usd_per_day:left"' in page

    # Every history these runs and their budget left replays on this code (both days' budgets, all four runs).
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.worker import Replayer

    from stakeflow.workflows.agent_task import AgentTaskWorkflow
    from stakeflow.workflows.budget_day import BudgetWorkflow

    query = f"WorkflowId STARTS_WITH 'budget-' OR WorkflowId STARTS_WITH '{settings.queue_prefix}-budget-'"
    histories = [
        await client.get_workflow_handle(w.id, run_id=w.run_id).fetch_history()
        async for w in client.list_workflows(query)
        if w.id.startswith(settings.queue_prefix) or w.id in started_ids - earlier
    ]
    replayer = Replayer(workflows=[AgentTaskWorkflow, BudgetWorkflow], data_converter=pydantic_data_converter)
    for history in histories:
        assert (await replayer.replay_workflow(history, raise_on_replay_failure=False)).replay_failure is None
    assert len(histories) == 6


BAD = [
    ("[budgets]\nfrontier_usd_per_day = -5", "[budgets] frontier_usd_per_day is -5: a budget is 0 or more US dollars"),
    (
        '[budgets]\nrun_usd = "five"',
        "[budgets] run_usd must be a number of US dollars, e.g. run_usd = 5.0 (not 'five')",
    ),
    ('[budgets]\non_exceeded = "explode"', "budgets.on_exceeded' in"),
    ("[agents.triage]\nusd_per_day = true", "[agents.<name>] usd_per_day must be a number of US dollars"),
    ('[hooks.gh]\nsecret_env = "S"\ngoal = "g"\nmax_runs_per_minute = 0', "hooks.gh.max_runs_per_minute"),
]


@pytest.mark.parametrize("toml,says", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_budget_configuration_is_refused_at_start_up_with_the_fix(tmp_path, monkeypatch, toml, says):
    from click.testing import CliRunner

    from stakeflow.cli import cli

    home = tmp_path / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text(toml + "\n")
    monkeypatch.setenv("STAKEFLOW_HOME", str(home))
    result = CliRunner().invoke(cli, ["worker"])
    assert result.exit_code == 1 and says in result.output, result.output
    if "explode" in toml:
        assert "'downgrade', 'approve' or 'fail'" in result.output


def test_a_budget_without_a_frontier_price_is_refused_when_the_worker_starts(tmp_path):
    from stakeflow.core.errors import ConfigError
    from stakeflow.workers.main import Holders

    settings = make_settings(tmp_path, anthropic_api_key="sk-ant-test-x", frontier_model="claude-unknown-9",
                             budgets={"frontier_usd_per_day": 5.0})  # fmt: skip
    with pytest.raises(ConfigError, match=r'add \[prices."claude-unknown-9"\] input_per_mtok and output_per_mtok'):
        Holders(settings)


def sent_text_bytes(body: dict) -> int:
    """The UTF-8 bytes of every text a Messages API request carries: a byte-level BPE makes at most one token of each."""
    texts = [json.dumps(body.get("system"), ensure_ascii=False), json.dumps(body.get("tools"), ensure_ascii=False)]
    texts += [json.dumps(m, ensure_ascii=False) for m in body.get("messages") or []]
    return sum(len(t.encode("utf-8")) for t in texts)


UNUSUAL = "Résumé naïve — 東京の売上は12%増 🚀🚀 ∑x² " * 40  # multi-byte text, where bytes per token are fewest


@pytest.mark.parametrize("purpose", ["plan", "step", "answer", "judge"])
async def test_the_worst_case_counts_every_byte_the_frontier_is_sent(tmp_path, purpose):
    """The reservation's input tokens are at least the UTF-8 bytes of all the request's text (its system prompt,
    messages, output tool and schema), which bounds Anthropic's count: each of its tokens stands for >= 1 byte."""
    from stakeflow.activities.models import ModelActivities
    from stakeflow.activities.parameters import ModelParameters
    from stakeflow.agents import prompts
    from stakeflow.agents.budgets import TOOL_PROMPT_TOKENS, BudgetRef
    from stakeflow.agents.tools import CATALOGUE
    from stakeflow.agents.types import ModelCallRequest, ModelEndpoint

    views = [CATALOGUE[n].view() for n in ("read_file", "write_file", "sql_query", "calculator", "http_get")]
    prompt = {
        "plan": prompts.plan_prompt(UNUSUAL, views, 6, ["notes.txt (612 bytes)"]),
        "step": prompts.step_prompt(UNUSUAL, 1, 2, "Write it", views[1], [], ["notes.txt (612 bytes)"]),
        "answer": prompts.answer_prompt(UNUSUAL, []),
        "judge": UNUSUAL,
    }[purpose]
    req = ModelCallRequest(
        purpose=purpose,
        system=prompts.PLAN_SYSTEM + UNUSUAL,
        prompt=prompt,
        tools=views if purpose == "plan" else [views[1]],
        endpoint=ModelEndpoint(route="frontier", model="claude-test"),
        budgets=[BudgetRef(name=RUN_BUDGET, limit_usd=100.0, scope="run")],
    )
    with FakeAnthropicServer() as frontier:
        frontier.script(
            agent(plan(("Think", None)), {1: think("x")}, "done")
            if purpose != "judge"
            else (lambda b: {"winner": "tie", "reason": "same"})
        )
        settings = make_settings(tmp_path, anthropic_api_key="sk-ant-test-x", anthropic_base_url=frontier.url,
                                 frontier_model="claude-test", prices=PRICE)  # fmt: skip
        models = ModelActivities(ModelParameters.from_settings(settings))
        try:
            estimate = models.worst_case_tokens(req)
            await models.call_model(req)
        finally:
            await models.close()
        [sent] = frontier.calls
    assert estimate >= sent_text_bytes(sent.body) + TOOL_PROMPT_TOKENS, (estimate, sent_text_bytes(sent.body))


def test_budgets_text_and_no_budgets(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from stakeflow.cli import cli
    from stakeflow.services.budgets import budget_lines

    monkeypatch.setenv("STAKEFLOW_HOME", str(tmp_path))
    none = CliRunner().invoke(cli, ["budgets"])
    assert none.exit_code == 0 and none.stdout.startswith("no budgets configured: set [budgets] frontier_usd_per_day")
    assert json.loads(CliRunner().invoke(cli, ["budgets", "--json"]).stdout) == []
    item = {"name": GLOBAL_BUDGET, "limit": 5.0, "settled": 4.98, "reserved": 0.01, "left": 0.01,
            "resets_at": "2026-12-07T00:00:00Z", "in_doubt": 0.01, "in_doubt_calls": 1}  # fmt: skip
    lines = budget_lines([item], make_settings(tmp_path, budgets={"run_usd": 0.5}))
    assert lines == [
        "frontier_usd_per_day: $5.00 · settled $4.98 · reserved $0.01 · left $0.01 · resets 2026-12-07T00:00:00Z"
        " · 1 call(s) in doubt $0.01",
        "run_usd: $0.50 per run (each run's own frontier spend)",
    ]


async def test_a_worker_counts_budget_downgrades_in_its_metrics(tmp_path):
    """`stakeflow_budget_downgrades{budget}`: from the step spans the workflow worker ends (stakeflow.temporal.metrics)."""
    from opentelemetry.sdk.trace import ReadableSpan

    from stakeflow.core import semconv as sc
    from stakeflow.temporal.metrics import SpanMetrics, start
    from tests.support import free_port
    from tests.test_metrics import scrape, total

    port = free_port()
    runtime = start(make_settings(tmp_path, metrics_port=port))
    spans = SpanMetrics(runtime)
    step = {
        sc.ROUTE: "open",
        sc.REASON: f"planner assessed high stakes; downgraded: frontier budget {GLOBAL_BUDGET} ...",
    }
    spans.on_end(ReadableSpan(name=sc.SPAN_STEP, attributes={**step, sc.BUDGET_DOWNGRADED: GLOBAL_BUDGET}))
    spans.on_end(ReadableSpan(name=sc.SPAN_STEP, attributes={**step, sc.BUDGET_DOWNGRADED: RUN_BUDGET}))
    spans.on_end(ReadableSpan(name=sc.SPAN_STEP, attributes={sc.ROUTE: "frontier"}))  # not downgraded
    text = await scrape(f"http://127.0.0.1:{port}/metrics")
    assert total(text, "stakeflow_budget_downgrades", budget=GLOBAL_BUDGET) == 1
    assert total(text, "stakeflow_budget_downgrades") == 2
