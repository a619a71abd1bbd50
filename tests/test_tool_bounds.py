"""Tool calls stay bounded whatever the tool does: a huge error is cut like a huge output (issue 21 §13).

Real dev server, real workers, a real MCP server over Streamable HTTP (tests/mcp_test_server.py); only the
model is scripted.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from stakeflow.activities.python_tool_threads import ToolThreads, ToolTimedOut
from stakeflow.agents.prompts import MAX_CONTEXT_CHARS
from stakeflow.config import McpServerConfig
from stakeflow.services import runs
from tests import team_tools
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer, prompt_text
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
    req = runs.build_request(settings, "Run explode", workspace=ws)
    async with running_workers(client, settings):
        result = await (await runs.start_run(client, settings, req)).result()
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
    req = runs.build_request(settings, "Run it", workspace=tmp_path, tools=["web.huge_error"])
    async with running_workers(client, settings):
        result = await (await runs.start_run(client, settings, req)).result()
    [outcome] = result.steps[0].tool_results
    assert result.status == "completed" and not outcome.ok
    assert len(outcome.error) <= MAX_CONTEXT_CHARS + 100
    if size < 1_000_000:
        assert outcome.error.startswith("xxx") and outcome.error.endswith("more characters not kept]")
    else:
        assert "answered more than the MCP transport accepts" in outcome.error
    assert [c["tool"] for c in calls_in(log)] == ["huge_error"]


async def test_hung_python_tools_time_out_in_their_own_bounded_threads():
    """Each call is held to its timeout_s; at most ``size`` threads are ever taken; the default executor stays free."""
    team_tools.RELEASE.clear()
    threads = ToolThreads(size=2)
    try:
        outcomes = await asyncio.gather(
            *(threads.run("hang", team_tools.hang, {"label": str(i)}, 0.5) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(o, ToolTimedOut) for o in outcomes)
        messages = sorted(str(o) for o in outcomes)
        assert messages[0].startswith("hang could not start within its timeout (0.5s): all 2 Python tool threads")
        assert all(m.startswith("hang did not finish within its timeout_s (0.5s)") for m in messages[1:])
        assert threads.running == ["hang", "hang"]  # the third never started a thread
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 5) == "free"
    finally:
        team_tools.RELEASE.set()
    for _ in range(50):
        if not threads.running:
            break
        await asyncio.sleep(0.05)
    assert threads.running == []  # released threads give their slots back


async def test_hung_python_tools_leave_read_file_its_threads_and_the_worker_stops(client, tmp_path, open_fake):
    """More hung calls than the default executor has threads (6 on 2 cores): a read_file run still completes,
    and the worker's shutdown does not wait for the hung threads."""
    team_tools.RELEASE.clear()
    team_tools.HUNG.clear()
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("Revenue grew 12%.\n")
    hanging = agent(plan(("Wait for it", "hang")), {1: call("hang", label="x")}, answer="waited")
    reading = agent(plan(("Read the notes", "read_file")), {1: call("read_file", path="notes.txt")}, answer="12%")
    open_fake.script(lambda body: (reading if "What does notes.txt say" in prompt_text(body) else hanging)(body))
    settings = _settings(tmp_path, open_fake)
    settings.tools.python = ["tests.team_tools:hang"]
    try:
        async with running_workers(client, settings):
            hung = [
                await runs.start_run(client, settings, runs.build_request(settings, "Wait", workspace=ws))
                for _ in range(8)
            ]
            deadline = time.monotonic() + 60
            while len(team_tools.HUNG) < 8:
                assert time.monotonic() < deadline, f"only {len(team_tools.HUNG)} hang calls started"
                await asyncio.sleep(0.1)
            read = await runs.start_run(
                client, settings, runs.build_request(settings, "What does notes.txt say?", workspace=ws)
            )
            assert (await asyncio.wait_for(read.result(), 30)).steps[0].tool_results[0].output == "Revenue grew 12%.\n"
            for handle in hung:
                [outcome] = (await asyncio.wait_for(handle.result(), 30)).steps[0].tool_results
                assert "did not finish within its timeout_s (1s)" in outcome.error
            stopping = time.monotonic()
        assert time.monotonic() - stopping < 10, "the worker's shutdown waited for hung tool threads"
    finally:
        team_tools.RELEASE.set()
