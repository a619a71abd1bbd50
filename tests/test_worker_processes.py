"""`stakeflow worker --processes N`: N pollers that all serve runs, stopped together by one SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from stakeflow.core.contracts import queue_name
from stakeflow.services import runs
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer
from tests.support import make_settings, open_endpoint_env, spawn_worker, worker_env, worker_log


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _poller_pids(client, prefix: str) -> set[int]:
    resp = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue_name("workflows", prefix)),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return {int(p.identity.split("@", 1)[0]) for p in resp.pollers if p.identity.split("@", 1)[0].isdigit()}


async def _wait_for(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_two_processes_poll_serve_runs_and_stop_on_one_sigterm(client, tmp_path):
    prefix = f"t{uuid.uuid4().hex[:8]}"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with FakeOpenAIServer(model="qwen-test") as fake:
        fake.script(agent(plan(("Compute", "calculator")), {1: call("calculator", expression="6*7")}, answer="42"))
        env = worker_env(
            tmp_path / "home",
            client,
            prefix,
            **open_endpoint_env(fake.url),
        )
        parent = spawn_worker(env, args=("--processes", "2"))
        try:
            children = await _wait_for(
                lambda: _async(len(_children(parent.pid)) == 2 and _children(parent.pid)), 60, "two worker processes"
            )
            pollers = await _wait_for(
                lambda: _poll_set(client, prefix, set(children)), 60, f"pollers of both children: {worker_log(env)}"
            )
            assert pollers == set(children)

            settings = make_settings(tmp_path, queue_prefix=prefix, open_base_url=fake.url, open_model="qwen-test")
            handles = [
                await runs.start_run(
                    client, settings, runs.build_request(settings, f"Compute {i}", workspace=workspace)
                )
                for i in range(6)
            ]
            results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
            assert [r.answer for r in results] == ["42"] * 6
        finally:
            parent.send_signal(signal.SIGTERM)
            code = parent.wait(60)
    assert code == 0, worker_log(env)
    assert not any(_alive(c) for c in children)
    assert "worker processes stopped" in worker_log(env)


async def test_children_stop_when_their_parent_is_killed(client, tmp_path):
    prefix = f"t{uuid.uuid4().hex[:8]}"
    env = worker_env(tmp_path / "home", client, prefix, STAKEFLOW_OPEN_BASE_URL="http://127.0.0.1:9/v1")
    parent = spawn_worker(env, "workflows", args=("--processes", "2"))
    children = await _wait_for(
        lambda: _async(len(_children(parent.pid)) == 2 and _children(parent.pid)), 60, "two worker processes"
    )
    await _wait_for(lambda: _poll_set(client, prefix, set(children)), 60, "pollers of both children")
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    try:
        await _wait_for(
            lambda: _async(not any(_alive(c) for c in children)),
            60,
            f"the children to stop (PR_SET_PDEATHSIG): {worker_log(env)}",
        )
    finally:
        for c in children:  # never leave a poller behind, even when the test fails
            if _alive(c):
                os.kill(c, signal.SIGKILL)


async def _async(value):
    return value


async def _poll_set(client, prefix: str, children: set[int]):
    found = await _poller_pids(client, prefix)
    return found if children <= found else None
