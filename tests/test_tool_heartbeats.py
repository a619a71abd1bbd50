"""A side effect happens once: every tool call on a queue heartbeats, whatever its source (issue 20 §2).

A call that outlives the run's heartbeat timeout without beating is retried by Temporal while it still runs:
before, a slow Python or MCP tool started several times. Real dev server, real workers (one a `stakeflow
worker` process that is SIGKILLed), a real MCP server over Streamable HTTP; only the model is scripted.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from stakeflow.config import McpServerConfig
from stakeflow.services import runs
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer
from tests.support import REPO, make_settings, running_workers, spawn_worker, worker_env, worker_log
from tests.test_mcp_tools import calls_in, http_server  # noqa: F401 (fixture)

HEARTBEAT_S = 2.0


@pytest.fixture
def open_fake():
    with FakeOpenAIServer(model="qwen-test") as server:
        yield server


def _settings(tmp_path, open_fake, **kw):
    return make_settings(tmp_path, open_base_url=open_fake.url, open_model="qwen-test", open_dialect="vllm", **kw)


def _request(settings, goal, ws, **kw):
    req = runs.build_request(settings, goal, workspace=ws, auto_approve=True, **kw)
    req.heartbeat_timeout_s = HEARTBEAT_S
    return req


async def test_a_slow_side_effecting_python_tool_starts_once(client, tmp_path, open_fake):
    ws = tmp_path / "ws"
    ws.mkdir()
    seconds = 3 * HEARTBEAT_S
    open_fake.script(
        agent(plan(("Post it", "slow_post")), {1: call("slow_post", message="hi", seconds=seconds)}, answer="posted")
    )
    settings = _settings(tmp_path, open_fake)
    settings.tools.python = ["tests.team_tools:slow_post"]
    async with running_workers(client, settings):
        result = await (await runs.start_run(client, settings, _request(settings, "Post hi", ws))).result()
    assert result.steps[0].status == "ok" and result.steps[0].tool_results[0].output == "posted hi"
    assert (ws / "starts.log").read_text() == "slow_post\n"


async def test_a_slow_mcp_tool_is_called_once(client, tmp_path, open_fake, http_server):
    url, log = http_server
    open_fake.script(
        agent(
            plan(("Store it", "web.slow_store")),
            {1: call("web.slow_store", text="hi", seconds=3 * HEARTBEAT_S)},
            answer="stored",
        )
    )
    settings = _settings(tmp_path, open_fake, mcp={"web": McpServerConfig(url=url)})
    req = _request(settings, "Store hi", tmp_path, tools=["web.slow_store"])
    async with running_workers(client, settings):
        result = await (await runs.start_run(client, settings, req)).result()
    assert result.steps[0].status == "ok" and result.steps[0].tool_results[0].output == "stored"
    assert [c["tool"] for c in calls_in(log)] == ["slow_store"]


async def test_a_dead_tools_worker_is_named_and_a_non_idempotent_call_is_not_repeated(client, tmp_path, open_fake):
    """The tools worker is SIGKILLed mid-call: the run is told the worker died, and the call is not made again."""
    ws = tmp_path / "ws"
    ws.mkdir()
    open_fake.script(
        agent(plan(("Charge it", "slow_charge")), {1: call("slow_charge", amount=5, seconds=60)}, answer="charged?")
    )
    settings = _settings(tmp_path, open_fake)
    settings.tools.python = ["tests.team_tools:slow_charge"]
    tools_home = tmp_path / "tools-home"
    tools_home.mkdir()
    (tools_home / "stakeflow.toml").write_text('[tools]\npython = ["tests.team_tools:slow_charge"]\n')
    env = worker_env(tools_home, client, settings.queue_prefix, PYTHONPATH=str(REPO))
    proc = spawn_worker(env, queues="tools")
    try:
        async with running_workers(client, settings, roles=("workflows", "open")):
            handle = await runs.start_run(client, settings, _request(settings, "Charge 5", ws))
            deadline = time.monotonic() + 60
            while not (ws / "starts.log").exists():
                assert time.monotonic() < deadline and proc.poll() is None, worker_log(env)
                await asyncio.sleep(0.1)
            proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            result = await handle.result()
            noticed = time.monotonic() - killed
    finally:
        proc.kill()
        proc.wait(10)
    [outcome] = result.steps[0].tool_results
    assert not outcome.ok and "may have acted" in outcome.error
    assert "stopped heartbeating" in outcome.error and "died or stalled" in outcome.error
    assert (ws / "starts.log").read_text() == "slow_charge\n"
    assert noticed < 30, "a dead worker is noticed after the heartbeat timeout, not the tool's"
