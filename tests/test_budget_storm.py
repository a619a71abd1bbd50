"""A storm against a frontier budget (issue 24): 200 deliveries to a hook, sent at once, each run wanting two
frontier calls, with ``frontier_usd_per_day`` set to the cost of about 20 runs, while worker processes are
SIGKILLed and restarted. The scripted frontier's own log is the truth.

What must hold: the frontier billed no more than the budget; every delivery has exactly one run and every run
completed (on the frontier while money lasted, downgraded after, each downgrade with its reason); and
`stakeflow budgets` agrees with the log to the cent: what it calls settled is what the log billed for the calls
that settled, and every call the log billed beyond those is one whose worker died mid-call, still held at its
worst case (in doubt: agents/budgets.py).
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import uuid

import httpx
import pytest
from click.testing import CliRunner

from stakeflow.agents.budgets import GLOBAL_BUDGET
from stakeflow.agents.types import TaskResult
from stakeflow.cli import cli
from stakeflow.traces import TraceStore
from stakeflow.webhooks import create_app
from tests.agent_script import agent, plan, think
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, Reply
from tests.support import open_endpoint_env, spawn_worker, worker_env
from tests.webhook_support import ENVIRON, ServerThread, issue_body, signed

DELIVERIES = 200
BUDGET_USD = 0.38  # about 20 runs' two frontier calls, a step and the answer (~$0.0095 each, as billed below)
OUTPUT_TOKENS = 600
WORKERS = 2
TOML = f"""
frontier_model = "claude-test"

[prices."claude-test"]
input_per_mtok = 3.0
output_per_mtok = 15.0

[budgets]
frontier_usd_per_day = {BUDGET_USD}

[hooks.storm]
secret_env = "HOOK_SECRET"
goal = "Triage: {{payload.issue.title}}"
stakes = "auto"
"""


def script():
    return agent(plan(("Weigh it", None, "high")), {1: think("weighed")}, "done")


def billed(respond):
    """The frontier answers after a while (so kills land mid-call) and bills input tokens as a quarter of the bytes."""

    def answer(body):
        reply = Reply(output=respond(body))
        reply.usage = {"input_tokens": len(json.dumps(body)) // 4, "output_tokens": OUTPUT_TOKENS}
        reply.delay_s = random.uniform(0.05, 0.3)
        return reply

    return answer


def billed_usd(request) -> float:
    return (len(json.dumps(request.body)) // 4) * 3.0 / 1e6 + OUTPUT_TOKENS * 15.0 / 1e6


@pytest.mark.timeout(600)
async def test_a_storm_of_deliveries_never_spends_past_the_budget(client, tmp_path, monkeypatch):
    random.seed(20261206)
    home = tmp_path / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text(TOML)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    address = client.service_client.config.target_host
    with FakeOpenAIServer(model="qwen-test") as open_fake, FakeAnthropicServer() as frontier:
        open_fake.script(script())
        frontier.script(billed(script()))
        frontier_env = {"ANTHROPIC_API_KEY": "sk-ant-test-storm", "ANTHROPIC_BASE_URL": frontier.url}
        env = worker_env(home, client, prefix, **open_endpoint_env(open_fake.url), **frontier_env)
        for key, value in {**env, "HOOK_SECRET": ENVIRON["HOOK_SECRET"]}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("STAKEFLOW_TEMPORAL_ADDRESS", address)
        from stakeflow.config import load_settings

        settings = load_settings()
        workers = [spawn_worker(env) for _ in range(WORKERS)]
        kills = 0
        try:
            with ServerThread(create_app(settings, environ=ENVIRON)) as server:
                async with httpx.AsyncClient(timeout=60) as http:
                    bodies = [issue_body(title=f"storm {i}") for i in range(DELIVERIES)]
                    answers = await asyncio.gather(
                        *(
                            http.post(f"{server.url}/hooks/storm", content=b, headers=signed(b, f"d-{prefix}-{i}"))
                            for i, b in enumerate(bodies)
                        )
                    )
            assert [a.status_code for a in answers] == [202] * DELIVERIES, {a.status_code: a.text for a in answers}
            ids = [a.json()["workflow_id"] for a in answers]
            assert len(set(ids)) == DELIVERIES and not any(a.json()["duplicate"] for a in answers)
            done = asyncio.ensure_future(
                asyncio.gather(
                    *(client.get_workflow_handle(i, result_type=TaskResult).result() for i in ids),
                    return_exceptions=True,
                )
            )
            while not done.done():
                await asyncio.wait([done], timeout=random.uniform(2.0, 4.0))
                if done.done() or kills >= 6:
                    continue
                n = kills % WORKERS
                workers[n].send_signal(signal.SIGKILL)
                workers[n].wait(10)
                workers[n] = spawn_worker(env)
                kills += 1
            results = await done
            started = [
                w
                async for w in client.list_workflows(
                    f"WorkflowType = 'AgentTaskWorkflow' AND WorkflowId STARTS_WITH 'hook-storm-d-{prefix}-'"
                )
            ]
            assert len(started) == DELIVERIES  # every delivery has exactly one run
            # budgets as `stakeflow budgets --json` prints them (a worker answers the budget's query)
            listed = await asyncio.to_thread(CliRunner().invoke, cli, ["budgets", "--json"])
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait(60)

    assert kills >= 3, f"only {kills} kills: the storm ended before it tested anything"
    billed_total = sum(billed_usd(r) for r in frontier.calls)
    assert billed_total <= BUDGET_USD  # the provider's own log: never over, by zero calls
    failed = [
        f"{i}: {getattr(r, 'cause', r)}" for i, r in zip(ids, results, strict=True) if isinstance(r, BaseException)
    ]
    assert failed == []
    frontier_runs = [r for r in results if any(s.route == "frontier" for s in r.steps)]
    downgraded = [s for r in results for s in r.steps if s.downgraded]
    # How many runs fit depends on where the kills land: each strands its worker's in-flight calls, held at their
    # worst case (~2x what they bill) until their deadline. Without kills about 19 fit (bench/budgets.py); at 6 kills
    # 4, 8 and 9 were seen (12 calls stranded, $0.26 of $0.38 held), and 0: the first wave of ~19 frontier calls is
    # in flight together, and kills that land on it strand every one, so no run keeps a frontier step although the
    # provider billed them. So the count is not a fixed bound: what must hold is that the frontier was used (the
    # provider's log), that the rest were downgraded with the budget's reason, and (below) that the provider's log,
    # the settled figure and the held amount agree.
    assert frontier.calls and billed_total > 0
    assert len(frontier_runs) < DELIVERIES / 2 and downgraded
    assert all("downgraded: frontier budget frontier_usd_per_day $0.38 spent (" in s.reason for s in downgraded)

    # The trace store counts them: the runs view's downgraded_by_budget per run, and `costs` over them all.
    store = TraceStore(home / "traces.duckdb")
    store.sync(budget_s=None)
    with store.reader() as con:
        stored, downgrades = con.execute(
            "SELECT count(*), sum(downgraded_by_budget) FROM runs WHERE source = 'storm'"
        ).fetchone()
    noticed = sum(1 for r in results for n in r.notices if ": downgraded: frontier budget" in n)
    assert (stored, downgrades) == (DELIVERIES, noticed) and noticed >= len(downgraded)
    costs = await asyncio.to_thread(CliRunner().invoke, cli, ["costs", "--json"])
    assert json.loads(costs.stdout)["downgraded_by_budget"] == noticed

    assert listed.exit_code == 0, listed.output
    [budget] = json.loads(listed.stdout)
    assert budget["name"] == GLOBAL_BUDGET and budget["limit"] == BUDGET_USD
    settled, reserved = budget["settled"], budget["reserved"]
    # What it settled is what the log billed, to the cent, but for calls whose worker died after the provider billed
    # them and before they settled: those are still held, at their worst case (in doubt once past their deadline).
    assert settled <= billed_total + 1e-9 and round(billed_total - settled, 2) <= round(reserved, 2)
    if reserved == 0:
        assert round(settled, 2) == round(billed_total, 2)
    unsettled = len(frontier.calls) - budget["calls"]  # calls billed whose worker died before it settled them
    assert 0 <= unsettled <= len(frontier.calls)
    print(
        f"\nstorm: {DELIVERIES} runs, {kills} kills, {len(frontier.calls)} frontier calls billed ${billed_total:.4f} "
        f"of ${BUDGET_USD}; budgets: settled ${settled:.4f} ({budget['calls']} calls), reserved ${reserved:.4f}; "
        f"{len(frontier_runs)} runs used the frontier, {len(downgraded)} steps downgraded"
    )
