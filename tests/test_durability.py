"""Durability: a worker killed with SIGKILL in the middle of a run; a new worker finishes it.

The worker is a real `stakeflow worker` process; the run's write_file side effect must happen
exactly once.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid

import pytest

from stakeflow.services import runs
from tests.agent_script import agent, call, plan, round_of
from tests.fakes import FakeOpenAIServer, Reply
from tests.support import make_settings, open_endpoint_env, spawn_worker, worker_env, worker_log


def start_worker(env: dict[str, str]) -> subprocess.Popen:
    return spawn_worker(env)


async def wait_for(predicate, seconds: float, what: str) -> None:
    import asyncio

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


async def test_sigkill_mid_run_then_new_worker_finishes_with_one_side_effect(client, tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    step2_calls = []
    lock = threading.Lock()

    def step2(body):
        with lock:
            step2_calls.append(time.monotonic())
            first = len(step2_calls) == 1
        # The first attempt hangs: the worker dies while waiting on it.
        return Reply.delayed(60, {"tool_calls": [], "result": "late"}) if first else {"tool_calls": [], "result": "42"}

    with FakeOpenAIServer(model="qwen-test") as open_fake:
        open_fake.script(
            agent(
                plan(("Log the start", "write_file"), ("Think", None)),
                {1: call("write_file", path="log.txt", content="entry\n", append=True), 2: step2},
                answer="done",
            )
        )
        prefix = f"t{uuid.uuid4().hex[:8]}"
        settings = make_settings(tmp_path, queue_prefix=prefix, open_base_url=open_fake.url, open_model="qwen-test")
        req = runs.build_request(settings, "Log and think", stakes="low", workspace=workspace)
        req.heartbeat_timeout_s = 3
        env = worker_env(
            tmp_path / "home",
            client,
            prefix,
            **open_endpoint_env(open_fake.url),
        )

        first = start_worker(env)
        try:
            handle = await runs.start_run(client, settings, req)
            await wait_for(lambda: len(step2_calls) == 1, 60, "the step-2 model call")
            assert (workspace / "log.txt").read_text() == "entry\n"
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
        assert first.returncode == -signal.SIGKILL

        second = start_worker(env)
        try:
            result = await handle.result()
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
            err = worker_log(env)

    assert result.status == "completed" and result.answer == "done"
    assert (workspace / "log.txt").read_text() == "entry\n"  # exactly once
    assert len(list((workspace / ".stakeflow" / "ledger").glob("*.json"))) == 1
    assert [s.status for s in result.steps] == ["ok", "ok"]
    assert result.steps[1].result == "42"
    assert len(step2_calls) == 2  # the lost attempt, then the retry on the new worker
    # SIGTERM is a graceful shutdown.
    assert second.returncode == 0, err
    assert "worker stopped" in err


async def test_write_retried_by_temporal_acts_once(client, tmp_path):
    """The same tool request delivered twice (a retry after a lost completion) writes once."""
    from stakeflow.activities.tools import ToolActivities
    from stakeflow.agents.types import ToolRequest

    settings = make_settings(tmp_path)
    acts = ToolActivities(settings.tools, settings.ledger_dir)
    ws = tmp_path / "ws"
    ws.mkdir()
    req = ToolRequest(
        tool="write_file",
        args={"path": "a.txt", "content": "x\n", "append": True},
        workspace=str(ws),
        idempotency_key="task-1/1/0",
    )
    first, again = await acts.run_tool(req), await acts.run_tool(req)
    assert (first.ok, first.replayed, again.ok, again.replayed) == (True, False, True, True)
    assert (ws / "a.txt").read_text() == "x\n"


async def test_sigkill_mid_round_then_new_worker_finishes_and_no_tool_acts_twice(client, tmp_path):
    """A step's round 1 writes (ok) and fails (a refused path); the worker dies during round 2's model call. The
    new worker replays round 1 from history (nothing acts again), retries round 2's call, and the repeated
    successful write in it is not run again."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    log_entry = {"path": "log.txt", "content": "entry\n", "append": True}
    round2_calls: list[float] = []
    lock = threading.Lock()

    def step1(body):
        if round_of(body) == 1:
            return {
                "tool_calls": [
                    {"tool": "write_file", "args": log_entry},
                    {"tool": "write_file", "args": {"path": "../total.md", "content": "16330"}},
                ],
                "result": "logged; saving the total",
            }
        with lock:
            round2_calls.append(time.monotonic())
            first = len(round2_calls) == 1
        fixed = {
            "tool_calls": [
                {"tool": "write_file", "args": log_entry},
                {"tool": "write_file", "args": {"path": "total.md", "content": "16330"}},
            ],
            "result": "saved",
        }
        return Reply.delayed(60, fixed) if first else fixed

    with FakeOpenAIServer(model="qwen-test") as open_fake:
        open_fake.script(agent(plan(("Log and save the total", "write_file")), {1: step1}, answer="done"))
        prefix = f"t{uuid.uuid4().hex[:8]}"
        settings = make_settings(tmp_path, queue_prefix=prefix, open_base_url=open_fake.url, open_model="qwen-test")
        req = runs.build_request(settings, "Log, then save 16330", stakes="low", workspace=workspace)
        req.heartbeat_timeout_s = 3
        env = worker_env(tmp_path / "home", client, prefix, **open_endpoint_env(open_fake.url))
        first = start_worker(env)
        try:
            handle = await runs.start_run(client, settings, req)
            await wait_for(lambda: len(round2_calls) == 1, 60, "round 2's model call")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
        second = start_worker(env)
        try:
            result = await handle.result()
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)

    [step] = result.steps
    assert step.status == "ok" and [r.round for r in step.rounds] == [1, 2] and step.rounds[1].repeated == 1
    assert (workspace / "log.txt").read_text() == "entry\n"  # exactly once
    assert (workspace / "total.md").read_text() == "16330"
    assert len(round2_calls) == 2  # the lost attempt, then the retry on the new worker
