"""Tool calls stay bounded whatever the tool does: a huge error is cut like a huge output (issue 21 §13).

Real dev server, real workers, a real MCP server over Streamable HTTP (tests/mcp_test_server.py); only the
model is scripted.
"""

from __future__ import annotations

import pytest

from stakeflow import tasks
from stakeflow.agents.prompts import MAX_CONTEXT_CHARS
from stakeflow.catalog_config import McpServerConfig
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer
from tests.support import make_settings, running_workers
from tests.test_mcp_tools import calls_in, http_server  # noqa: F401 (fixture)

HUGE = 3_000_000  # characters: over Temporal's 2 MB payload limit


@pytest.fixture
def open_fake():
    with FakeOpenAIServer(model="qwen-test") as server:
        yield server


def _settings(tmp_path, open_fake, **kw):
    return make_settings(tmp_path, open_base_url=open_fake.url, open_model="qwen-test", open_dialect="vllm", **kw)


async def test_a_python_tool_raising_a_3_mb_error_runs_once_and_the_model_sees_it_cut(client, tmp_path, open_fake):
    ws = tmp_path / "ws"
    ws.mkdir()
    open_fake.script(agent(plan(("Try it", "explode")), {1: call("explode", size=HUGE)}, answer="it failed"))
    settings = _settings(tmp_path, open_fake)
    settings.tools.python = ["tests.team_tools:explode"]
    req = tasks.build_request(settings, "Run explode", workspace=ws)
    async with running_workers(client, settings):
        result = await (await tasks.start_run(client, settings, req)).result()
    [outcome] = result.steps[0].tool_results
    assert result.status == "completed" and result.steps[0].status == "tool_error"
    assert not outcome.ok and outcome.error.startswith("explode failed: RuntimeError: xxx")
    assert len(outcome.error) <= MAX_CONTEXT_CHARS + 100
    assert (ws / "calls.log").read_text() == "explode\n", "the tool ran more than once"


@pytest.mark.parametrize("size", [900_000, HUGE])
async def test_an_mcp_tool_answering_a_huge_is_error_is_called_once(client, tmp_path, open_fake, http_server, size):
    """Under the transport's own cap (1 MB per message over Streamable HTTP) the error is cut like an output;
    over it, the call is refused as too big: a tool error, not a dropped connection retried five times."""
    url, log = http_server
    open_fake.script(agent(plan(("Try it", "web.huge_error")), {1: call("web.huge_error", size=size)}, answer="failed"))
    settings = _settings(tmp_path, open_fake, mcp={"web": McpServerConfig(url=url)})
    req = tasks.build_request(settings, "Run it", workspace=tmp_path, tools=["web.huge_error"])
    async with running_workers(client, settings):
        result = await (await tasks.start_run(client, settings, req)).result()
    [outcome] = result.steps[0].tool_results
    assert result.status == "completed" and not outcome.ok
    assert len(outcome.error) <= MAX_CONTEXT_CHARS + 100
    if size < 1_000_000:
        assert outcome.error.startswith("xxx") and outcome.error.endswith("more characters not kept]")
    else:
        assert "answered more than the MCP transport accepts" in outcome.error
    assert [c["tool"] for c in calls_in(log)] == ["huge_error"]
