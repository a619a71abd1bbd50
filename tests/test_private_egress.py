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
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer
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
