"""MCP servers that die, restart or hang: what a run sees, against the official reference servers from npm
(stdio and Streamable HTTP) and the fastmcp test server. Real dev server, real workers; models scripted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from stakeflow.config import McpServerConfig
from stakeflow.core.contracts import APPROVE_UPDATE
from stakeflow.services import runs
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer, purpose_of
from tests.mcp_support import mcp_settings, npm_server, server_pids, wait_gone
from tests.support import (
    free_port,
    make_settings,
    open_endpoint_env,
    running_workers,
    spawn_worker,
    wait_for_approval,
    worker_env,
    worker_log,
)

TEST_SERVER = str(Path(__file__).with_name("mcp_test_server.py"))


@pytest.fixture
def open_fake():
    with FakeOpenAIServer(model="qwen-test") as server:
        yield server


@pytest.fixture
def files(tmp_path) -> Path:
    root = tmp_path / "files"
    root.mkdir()
    (root / "notes.txt").write_text("hello\n")
    return root


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid, 10), f"server {pid} did not die"


def only_server(marker: str) -> int:
    pids = server_pids(marker)
    assert len(pids) == 1, f"expected one server process for {marker}, found {pids}"
    return pids[0]


async def approve(handle, step: int) -> None:
    from stakeflow.agents.types import ApprovalRequest

    await handle.execute_update(APPROVE_UPDATE, ApprovalRequest(step=step, decision="approve", by="tester"))


async def test_a_stdio_server_that_died_while_idle_is_started_again_for_the_next_run(
    client, tmp_path, open_fake, files
):
    listing = call("fs.list_directory", path=str(files))
    open_fake.script(agent(plan(("List the files", "fs.list_directory")), {1: listing}, answer="listed"))
    fs = {"command": npm_server("mcp-server-filesystem"), "args": [str(files)]}
    settings = mcp_settings(tmp_path, open_fake, fs=fs)
    async with running_workers(client, settings):
        for _ in range(2):  # the second run meets the server killed after the first
            req = runs.build_request(settings, "List the files", workspace=tmp_path, tools=["fs.list_directory"])
            result = await (await runs.start_run(client, settings, req)).result()
            assert result.steps[0].tool_results[0].output == "[FILE] notes.txt"
            kill(only_server(str(files)))


async def test_a_call_approved_after_its_server_died_is_sent_on_a_fresh_session(
    client, tmp_path, open_fake, monkeypatch
):
    memory = tmp_path / "memory.jsonl"
    monkeypatch.setenv("MEMORY_FILE_PATH", str(memory))
    entity = {"name": "Ada", "entityType": "person", "observations": ["wrote the first program"]}
    step = call("memory.create_entities", entities=[entity])
    open_fake.script(agent(plan(("Remember Ada", "memory.create_entities")), {1: step}, answer="remembered"))
    server = {"command": npm_server("mcp-server-memory"), "env": ["MEMORY_FILE_PATH"]}
    settings = mcp_settings(tmp_path, open_fake, memory=server)
    req = runs.build_request(settings, "Remember Ada", workspace=tmp_path, tools=["memory.create_entities"])
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req)
        waiting = await wait_for_approval(handle, 1)
        assert waiting.steps[0].stakes == "high"
        kill(only_server(str(memory)))  # create_entities is not idempotent: only a call never sent may go again
        await approve(handle, 1)
        result = await handle.result()
    created = result.steps[0].tool_results[0]
    assert created.ok, created.error
    assert [json.loads(line)["name"] for line in memory.read_text().splitlines()] == ["Ada"]


async def test_a_non_idempotent_call_whose_server_died_mid_call_is_reported_not_repeated(client, tmp_path, open_fake):
    log = tmp_path / "calls.log"
    log.touch()
    open_fake.script(
        agent(plan(("Crash it", "crashy.crash")), {1: call("crashy.crash", text="once")}, answer="reported")
    )
    crashy = {"command": sys.executable, "args": [TEST_SERVER, "stdio", str(log)]}
    settings = mcp_settings(tmp_path, open_fake, crashy=crashy)
    req = runs.build_request(settings, "Crash it", workspace=tmp_path, tools=["crashy.crash"], auto_approve=True)
    async with running_workers(client, settings):
        result = await (await runs.start_run(client, settings, req)).result()
    crashed = result.steps[0].tool_results[0]
    assert not crashed.ok and "may have acted" in crashed.error and "not retried" in crashed.error
    assert [json.loads(line)["tool"] for line in log.read_text().splitlines()] == ["crash"]  # it did act, once


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def everything_over_http(port: int):
    """server-everything serving Streamable HTTP on ``port`` (its CLI: ``streamableHttp``, PORT from the env)."""
    proc = subprocess.Popen(
        [npm_server("mcp-server-everything"), "streamableHttp"],
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not listening(port):
            assert time.monotonic() < deadline and proc.poll() is None, "server-everything did not start"
            time.sleep(0.1)
        yield
    finally:
        proc.kill()
        proc.wait(10)


async def test_a_restarted_http_server_gets_a_new_session_for_calls_and_listings(client, tmp_path, open_fake):
    port = free_port()
    open_fake.script(
        agent(
            plan(("Echo", "everything.echo"), ("Toggle logging", "everything.toggle-simulated-logging")),
            {1: call("everything.echo", message="hi"), 2: call("everything.toggle-simulated-logging")},
            answer="done",
        )
    )
    settings = mcp_settings(tmp_path, open_fake, everything={"url": f"http://127.0.0.1:{port}/mcp"})
    tools = ["everything.echo", "everything.toggle-simulated-logging"]
    async with running_workers(client, settings):
        with everything_over_http(port):
            handle = await runs.start_run(client, settings, runs.build_request(settings, "Echo", tools=tools))
            await wait_for_approval(handle, 2)
        with everything_over_http(port):  # restarted during the approval wait: it knows no session
            await approve(handle, 2)
            first = await handle.result()
        with everything_over_http(port):  # and again before the next run lists its tools
            req = runs.build_request(settings, "Echo", tools=tools, auto_approve=True)
            second = await (await runs.start_run(client, settings, req)).result()
    for result in (first, second):
        echoed, toggled = (s.tool_results[0] for s in result.steps)
        assert echoed.output == "Echo: hi", echoed.error
        assert toggled.ok and "logging" in toggled.output.lower(), toggled.error


def children_of(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(entry.name))
    return kids


async def test_a_stdio_server_dies_with_a_sigkilled_worker(client, tmp_path, open_fake):
    # Mid-call, server-everything outlives the end of its stdin (its operation keeps node running).
    command = npm_server("mcp-server-everything")
    slow = call("everything.trigger-long-running-operation", duration=60, steps=2)
    open_fake.script(agent(plan(("Wait", "everything.trigger-long-running-operation")), {1: slow}, answer="-"))
    home = tmp_path / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text(f'[mcp.everything]\ncommand = "{command}"\n')
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = make_settings(tmp_path, queue_prefix=prefix, mcp={"everything": McpServerConfig(command=command)})
    env = worker_env(home, client, prefix, **open_endpoint_env(open_fake.url))
    worker = spawn_worker(env)
    server = None
    try:
        req = runs.build_request(settings, "Wait", tools=["everything.trigger-long-running-operation"])
        handle = await runs.start_run(client, settings, req)
        deadline = time.monotonic() + 60
        while not any(purpose_of(c.body) == "step" for c in open_fake.calls) or not children_of(worker.pid):
            assert time.monotonic() < deadline and worker.poll() is None, worker_log(env)
            await asyncio.sleep(0.1)
        [server] = children_of(worker.pid)
        await asyncio.sleep(2)  # the tool call reaches the server
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        assert wait_gone(server, 10), "the MCP server outlived its SIGKILLed worker"
        await handle.terminate()
    finally:
        if worker.poll() is None:
            worker.kill()
        if server is not None and not wait_gone(server, 0):
            os.kill(server, signal.SIGKILL)
