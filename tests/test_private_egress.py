"""Private data leaves by no path: a private run's call to an open-world tool waits for approval (showing exactly
what would be sent) or is refused, and nothing reaches the tool's server before the decision. The server is a
real MCP server over Streamable HTTP that logs every call it receives (tests/mcp_test_server.py)."""

from __future__ import annotations

import asyncio

import pytest

from stakeflow.agents.types import ApprovalRequest
from stakeflow.config import McpServerConfig
from stakeflow.core.contracts import APPROVE_UPDATE
from stakeflow.services import runs
from stakeflow.traces import TraceStore
from tests.agent_script import agent, call, plan
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer
from tests.support import make_settings, running_workers
from tests.test_mcp_tools import calls_in, http_server, wait_for_approval  # noqa: F401 (fixture)

SECRET_FACT = "Q3 margin 41.7% (board only)"


@pytest.fixture
def open_fake():
    with FakeOpenAIServer(model="qwen-test") as server:
        server.script(
            agent(
                plan(("Look the figure up outside", "web.lookup")),
                {1: call("web.lookup", key=SECRET_FACT)},
                answer="looked up",
            )
        )
        yield server


def settings_for(tmp_path, open_fake, url, rule):
    settings = make_settings(
        tmp_path,
        open_base_url=open_fake.url,
        open_model="qwen-test",
        open_dialect="vllm",
        mcp={"web": McpServerConfig(url=url)},
    )
    settings.policy.private_egress = rule
    return settings


async def test_a_private_run_waits_for_approval_before_anything_reaches_an_open_world_tool(
    client, tmp_path, open_fake, http_server
):
    url, log = http_server
    settings = settings_for(tmp_path, open_fake, url, "approve")
    req = runs.build_request(
        settings, "Check the figure", workspace=tmp_path, tools=["web.lookup"], sensitivity="private"
    )
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req)
        waiting = await wait_for_approval(handle, 1)
        await asyncio.sleep(0.5)
        assert calls_in(log) == [], "nothing may reach the server before the decision"
        step = waiting.steps[0]
        assert "private data to open-world tool web.lookup: needs approval" in step.reason
        await handle.execute_update(APPROVE_UPDATE, ApprovalRequest(step=1, decision="approve", by="dpo"))
        result = await handle.result()
    assert f'"key": "{SECRET_FACT}"' in result.steps[0].approval.waiting_for  # exactly what was sent, whole
    assert calls_in(log) == [{"tool": "lookup", "args": {"key": SECRET_FACT}}]


async def test_deny_refuses_the_call_and_nothing_reaches_the_server(client, tmp_path, open_fake, http_server):
    url, log = http_server
    settings = settings_for(tmp_path, open_fake, url, "deny")
    req = runs.build_request(
        settings, "Check the figure", workspace=tmp_path, tools=["web.lookup"], sensitivity="private"
    )
    async with running_workers(client, settings):
        result = await (await runs.start_run(client, settings, req)).result()
    step = result.steps[0]
    assert step.status == "tool_error" and "private_egress = deny" in step.tool_results[0].error
    assert calls_in(log) == []


async def test_a_public_run_calls_an_open_world_tool_without_waiting(client, tmp_path, open_fake, http_server):
    url, log = http_server
    settings = settings_for(tmp_path, open_fake, url, "approve")
    req = runs.build_request(settings, "Check the figure", workspace=tmp_path, tools=["web.lookup"])
    async with running_workers(client, settings):
        result = await (await runs.start_run(client, settings, req)).result()
    assert result.steps[0].status == "ok" and result.steps[0].approval is None
    assert len(calls_in(log)) == 1


SSN = "123-45-6789"


async def test_a_private_tool_that_fails_still_makes_the_run_private(client, tmp_path, http_server):
    """Issue 20 §1: the query fails, and its error text (holding the SSN) is private data all the same: the next
    high-stakes step stays on the open model, an open-world call waits for a person, nothing is captured as public."""
    url, log = http_server
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "people.csv").write_text(f"name,ssn\nAda,{SSN}\n")
    script = agent(
        plan(("Count the people", "sql_query"), ("Decide", None, "high"), ("Look it up outside", "web.lookup")),
        {
            1: call("sql_query", query="SELECT CAST(ssn AS INTEGER) FROM people"),
            2: {"tool_calls": [], "result": "look the number up"},
            3: call("web.lookup", key=SSN),
        },
        answer="done",
    )
    with FakeOpenAIServer(model="qwen-test") as open_fake, FakeAnthropicServer() as frontier_fake:
        open_fake.script(script)
        frontier_fake.script(script)
        settings = make_settings(
            tmp_path,
            open_base_url=open_fake.url,
            open_model="qwen-test",
            open_dialect="vllm",
            anthropic_api_key="sk-ant-test-taint",
            anthropic_base_url=frontier_fake.url,
            frontier_model="claude-test",
            mcp={"web": McpServerConfig(url=url)},
        )
        settings.policy.private_tools = ["sql_query"]
        settings.dataset.capture = True
        req = runs.build_request(settings, "Who is in people.csv?", workspace=ws, tools=["sql_query", "web.lookup"])
        async with running_workers(client, settings):
            handle = await runs.start_run(client, settings, req)
            waiting = await wait_for_approval(handle, 3)
            assert calls_in(log) == [], "the SSN left for an open-world tool"
            await handle.execute_update(
                APPROVE_UPDATE, ApprovalRequest(step=3, decision="reject", note="private", by="dpo")
            )
            result = await handle.result()
        frontier_bodies = [c.raw for c in frontier_fake.calls]
    failed = result.steps[0].tool_results[0]
    assert not failed.ok and SSN in failed.error  # the query failed, and its error holds the SSN
    assert result.sensitivity == "private"
    assert any("sql_query reads a private source" in n for n in result.notices)
    assert waiting.steps[1].route == "open" and waiting.steps[1].needs_approval
    assert not any(SSN in body for body in frontier_bodies)
    with TraceStore(settings.traces_path).reader() as con:
        captured = [str(row) for row in con.execute("SELECT * FROM captures").fetchall()]
    assert captured and not any(SSN in row for row in captured), "private data captured as public rows"


async def test_auto_approve_does_not_approve_private_data_leaving(client, tmp_path, open_fake, http_server):
    """Issue 20 §4: --auto-approve covers high-stakes actions, not private data leaving: that waits for a person."""
    url, log = http_server
    settings = settings_for(tmp_path, open_fake, url, "approve")
    req = runs.build_request(
        settings,
        "Record the secret figure",
        workspace=tmp_path,
        tools=["web.lookup"],
        sensitivity="private",
        auto_approve=True,
    )
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req)
        waiting = await wait_for_approval(handle, 1)
        await asyncio.sleep(0.5)
        assert calls_in(log) == [], "auto-approved private egress"
        assert any("--auto-approve does not cover private data" in n for n in waiting.notices)
        assert "needs approval (a person's: --auto-approve does not cover" in waiting.steps[0].reason
        await handle.execute_update(APPROVE_UPDATE, ApprovalRequest(step=1, decision="approve", by="dpo"))
        result = await handle.result()
    assert result.steps[0].approval.decision == "approved" and result.steps[0].approval.by == "dpo"
    assert any("--auto-approve does not cover private data" in n for n in result.notices)
    assert calls_in(log) == [{"tool": "lookup", "args": {"key": SECRET_FACT}}]


async def test_each_round_of_a_private_step_waits_before_anything_leaves(client, tmp_path, open_fake, http_server):
    """The agent loop: a private step's first call fails at the open-world tool; its second round asks a person
    again, with the new arguments whole, and nothing reaches the server before each decision."""
    url, log = http_server
    open_fake.script(
        agent(
            plan(("Look the figure up outside", "web.find")),
            {1: [call("web.find", key=""), call("web.find", key=SECRET_FACT)]},
            answer="looked up",
        )
    )
    settings = settings_for(tmp_path, open_fake, url, "approve")
    req = runs.build_request(
        settings, "Check the figure", workspace=tmp_path, tools=["web.find"], sensitivity="private"
    )
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req)
        for sent_before, key in ((0, ""), (1, SECRET_FACT)):
            for _ in range(300):  # the round's own wait, with its own arguments
                waiting = await wait_for_approval(handle, 1)
                if f'"key": "{key}"' in waiting.steps[0].waiting_for:
                    break
                await asyncio.sleep(0.1)
            assert len(calls_in(log)) == sent_before, "nothing may reach the server before the decision"
            await handle.execute_update(APPROVE_UPDATE, ApprovalRequest(step=1, decision="approve", by="dpo"))
        result = await handle.result()
    [step] = result.steps
    assert step.status == "ok" and [r.round for r in step.rounds] == [1, 2]
    assert calls_in(log) == [{"tool": "find", "args": {"key": ""}}, {"tool": "find", "args": {"key": SECRET_FACT}}]
