"""The Temporal dev server (file database) stops in the middle of runs and comes back: the runs
resume and complete; CLI commands issued while it is down fail at once with a clear message."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid

from click.testing import CliRunner
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from stakeflow.agents.types import TaskResult
from stakeflow.cli import cli
from stakeflow.local.services import dev_server_command, port_open
from stakeflow.services import runs
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer, Reply
from tests.support import free_port, make_settings, open_endpoint_env, spawn_worker


def start_server(db, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        dev_server_command(port, db_file=db, log_level="error"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not port_open("127.0.0.1", port):
        assert time.monotonic() < deadline and proc.poll() is None, "dev server did not start"
        time.sleep(0.1)
    return proc


async def test_runs_survive_a_server_restart(tmp_path, monkeypatch):
    port = free_port()
    db = tmp_path / "temporal.db"
    server = start_server(db, port)
    worker = None
    try:
        with FakeOpenAIServer(model="qwen-test") as open_fake:
            open_fake.script(
                agent(
                    plan(("Log", "write_file"), ("Think", None)),
                    {
                        1: lambda b: call("write_file", path=f"{uuid.uuid4().hex}.log", content="x", append=True),
                        2: lambda b: Reply.delayed(2.0, {"tool_calls": [], "result": "ok"}),
                    },
                    answer="done",
                )
            )
            address = f"127.0.0.1:{port}"
            prefix = f"t{uuid.uuid4().hex[:8]}"
            settings = make_settings(
                tmp_path,
                temporal_address=address,
                queue_prefix=prefix,
                open_base_url=open_fake.url,
                open_model="qwen-test",
                open_dialect="vllm",
            )
            env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("STAKEFLOW_")}
            env.update(
                STAKEFLOW_HOME=str(tmp_path / "home"),
                STAKEFLOW_TEMPORAL_ADDRESS=address,
                STAKEFLOW_QUEUE_PREFIX=prefix,
                **open_endpoint_env(open_fake.url),
            )
            worker = spawn_worker(env)
            client = await Client.connect(address, data_converter=pydantic_data_converter)
            ws = tmp_path / "ws"
            ws.mkdir()
            ids = []
            for i in range(5):
                req = runs.build_request(settings, f"restart run {i}", stakes="low", workspace=ws)
                ids.append((await runs.start_run(client, settings, req)).id)
            # Wait until the runs are mid-way (their step-2 model calls are in flight), then stop the server.
            deadline = time.monotonic() + 60
            while sum(1 for c in open_fake.calls if "Now step 2" in c.raw) < 5:
                assert time.monotonic() < deadline, "runs never reached step 2"
                await asyncio.sleep(0.1)
            server.send_signal(signal.SIGTERM)
            server.wait(30)

            monkeypatch.setenv("STAKEFLOW_TEMPORAL_ADDRESS", address)
            t0 = time.monotonic()
            down = await asyncio.to_thread(CliRunner().invoke, cli, ["status", ids[0]])
            assert down.exit_code == 1 and "cannot reach Temporal" in down.output
            assert time.monotonic() - t0 < 30

            server = start_server(db, port)
            client = await Client.connect(address, data_converter=pydantic_data_converter)
            results = await asyncio.wait_for(
                asyncio.gather(*(client.get_workflow_handle(i, result_type=TaskResult).result() for i in ids)),
                timeout=180,
            )
        assert [r.status for r in results] == ["completed"] * 5
        assert sorted(p.read_text() for p in ws.glob("*.log")) == ["x"] * 5  # one write per run
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
        server.send_signal(signal.SIGTERM)
        server.wait(30)
