"""write_file across hosts and runs: the idempotency record lives with the data, keyed by the run.

"Hosts" are real worker processes with different ``STAKEFLOW_HOME`` serving the same workspace (as
two machines mounting one share would); the dev server is the session's. A retry that lands on
another host must find what the first host did, an attempt that stalled and finishes after its retry
must not write again, and a new run that reuses a workflow id must not be mistaken for a retry.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel
from temporalio import workflow
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.worker import Worker

from stakeflow.activities.tools.workspace import lock_path
from stakeflow.agents.types import TaskResult, ToolRequest, ToolResult
from stakeflow.core.contracts import AGENT_WORKFLOW, RUN_TOOL, queue_name
from stakeflow.services import runs
from stakeflow.stores.file_lock import exclusive
from tests.agent_script import agent, call, plan, think
from tests.fakes import FakeOpenAIServer
from tests.support import make_settings, running_workers, worker_env, worker_log

STARTED = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED


def spawn_tools_worker(env: dict[str, str]) -> subprocess.Popen:
    """A real `stakeflow worker --queues tools` process: one "host" serving the tools queue."""
    log_dir = Path(env["STAKEFLOW_HOME"]) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "test-worker.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "stakeflow", "worker", "--queues", "tools"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGCONT)
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)


async def wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


# --- the same call delivered to two hosts --------------------------------------------------------


class Deliveries(BaseModel):
    request: ToolRequest
    queues: list[str]


@workflow.defn(sandboxed=False)
class DeliverToEachQueue:
    """Sends one tool request to each queue in turn: what a retry that lands on another host looks like."""

    @workflow.run
    async def run(self, d: Deliveries) -> list[ToolResult]:
        results = []
        for queue in d.queues:
            results.append(
                await workflow.execute_activity(
                    RUN_TOOL,
                    d.request,
                    result_type=ToolResult,
                    task_queue=queue,
                    start_to_close_timeout=timedelta(seconds=60),
                )
            )
        return results


async def test_a_write_done_on_one_host_is_not_redone_on_another(client: Client, tmp_path: Path) -> None:
    ws = tmp_path / "shared-ws"
    ws.mkdir()
    (ws / "log.txt").write_text("start\n")
    prefixes = [f"a{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"]
    hosts = [spawn_tools_worker(worker_env(tmp_path / f"home-{p[0]}", client, p)) for p in prefixes]
    request = ToolRequest(
        run_id="wf-1",
        step=1,
        tool="write_file",
        workspace=str(ws),
        idempotency_key="wf-1/run-1/1/0",
        args={"path": "log.txt", "content": "entry\n", "append": True},
    )
    queue = f"t{uuid.uuid4().hex[:8]}"
    try:
        async with Worker(client, task_queue=queue, workflows=[DeliverToEachQueue]):
            first, second = await client.execute_workflow(
                DeliverToEachQueue.run,
                Deliveries(request=request, queues=[queue_name("tools", p) for p in prefixes]),
                id=f"deliver-{queue}",
                task_queue=queue,
                result_type=list[ToolResult],
            )
    finally:
        for host in hosts:
            stop(host)
    assert (first.ok, first.replayed, second.ok, second.replayed) == (True, False, True, True), (first, second)
    assert second.output == first.output == "appended 6 bytes to log.txt (now 12 bytes)"
    assert (ws / "log.txt").read_text() == "start\nentry\n"
    # The record is with the data, not in either host's home.
    assert len(list((ws / ".stakeflow" / "ledger").glob("*.json"))) == 1
    assert not any((tmp_path / f"home-{p[0]}" / "ledger").exists() for p in prefixes)


# --- a new run under a reused workflow id ----------------------------------------------------------


async def test_a_reused_workflow_id_writes_again(client: Client, tmp_path: Path) -> None:
    # A workflow id comes back once its first run is closed and past retention, or from a client that
    # allows duplicates: the new run is a new call, not a retry of the old one.
    ws = tmp_path / "ws"
    ws.mkdir()
    with FakeOpenAIServer(model="qwen-test") as open_fake:
        open_fake.script(
            agent(
                plan(("Log it", "write_file"), ("Think", None)),
                {1: call("write_file", path="log.txt", content="entry\n", append=True), 2: think("ok")},
                answer="done",
            )
        )
        settings = make_settings(tmp_path, open_base_url=open_fake.url, open_model="qwen-test", open_dialect="vllm")
        req = runs.build_request(settings, "Log it", stakes="low", workspace=ws)
        wf_id = f"reused-{uuid.uuid4().hex[:8]}"
        results = []
        async with running_workers(client, settings):
            for _ in range(2):
                handle = await client.start_workflow(
                    AGENT_WORKFLOW,
                    req,
                    id=wf_id,
                    task_queue=queue_name("workflows", settings.queue_prefix),
                    result_type=TaskResult,
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                )
                results.append((handle.result_run_id, await handle.result()))
    assert [r.status for _, r in results] == ["completed", "completed"]
    assert results[0][0] != results[1][0]
    assert (ws / "log.txt").read_text() == "entry\nentry\n"
    assert len(list((ws / ".stakeflow" / "ledger").glob("*.json"))) == 2
    # The tools-queue call heartbeats: a stalled or dead attempt is retried after the run's heartbeat timeout.
    history = [e async for e in client.get_workflow_handle(wf_id, run_id=results[1][0]).fetch_history_events()]
    [scheduled] = [
        e.activity_task_scheduled_event_attributes
        for e in history
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == RUN_TOOL
    ]
    assert scheduled.heartbeat_timeout.ToTimedelta() == timedelta(seconds=req.heartbeat_timeout_s)


# --- an attempt that stalls, and finishes after its retry on another host ------------------------


class Partition:
    """A TCP relay between one worker and the dev server: ``cut()`` is a network partition, ``heal()`` ends it.

    Cutting closes the relay's connections, so the server drops that worker's polls (a stopped process
    would otherwise keep them open and swallow the retry) and the worker cannot learn its attempt is over.
    """

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._open = True
        self._transports: set[asyncio.Transport] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._open:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer.transport, up_writer.transport}
        self._transports |= pair
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._transports -= pair

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()

    def cut(self) -> None:
        self._open = False
        for transport in list(self._transports):
            transport.abort()

    def heal(self) -> None:
        self._open = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


async def stop_async(worker: subprocess.Popen) -> None:
    """SIGTERM (a graceful stop) without blocking the event loop the Partition relay runs on."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGCONT)
        worker.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while worker.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    if worker.poll() is None:
        worker.kill()
        worker.wait(10)


async def pending_tool_call(handle):
    for pending in (await handle.describe()).raw_description.pending_activities:
        if pending.activity_type.name == RUN_TOOL:
            return pending
    return None


def attempt_running(handle, attempt: int):
    async def check() -> bool:
        pending = await pending_tool_call(handle)
        return pending is not None and pending.attempt == attempt and pending.state == STARTED

    return check


@pytest.mark.timeout(180)
async def test_an_attempt_that_stalls_past_its_retry_on_another_host_writes_nothing(
    client: Client, tmp_path: Path
) -> None:
    # Host A takes the call and waits for the file's lock (another writer holds it). Then A stalls:
    # stopped, and cut off from the server. Its heartbeats stop, so Temporal retries the call on host B,
    # which waits for the lock too, heartbeating. B writes once the lock is free; then A wakes up,
    # still cut off (so it cannot know its attempt is over), gets the lock, and must not write again.
    ws = tmp_path / "shared-ws"
    ws.mkdir()
    (ws / "log.txt").write_text("start\n")
    prefix = f"t{uuid.uuid4().hex[:8]}"
    partition = Partition(client.service_client.config.target_host)
    env_a = worker_env(tmp_path / "home-a", client, prefix)
    env_a["STAKEFLOW_TEMPORAL_ADDRESS"] = await partition.start()
    env_b = worker_env(tmp_path / "home-b", client, prefix)
    host_a = spawn_tools_worker(env_a)
    host_b: subprocess.Popen | None = None
    try:
        with FakeOpenAIServer(model="qwen-test") as open_fake:
            open_fake.script(
                agent(
                    plan(("Log it", "write_file"), ("Think", None)),
                    {1: call("write_file", path="log.txt", content="entry\n", append=True), 2: think("ok")},
                    answer="done",
                )
            )
            settings = make_settings(
                tmp_path, queue_prefix=prefix, open_base_url=open_fake.url, open_model="qwen-test", open_dialect="vllm"
            )
            req = runs.build_request(settings, "Log it", stakes="low", workspace=ws)
            req.heartbeat_timeout_s = 4
            async with running_workers(client, settings, roles=("workflows", "open")):
                with exclusive(lock_path(ws.resolve(), "log.txt")):
                    handle = await runs.start_run(client, settings, req)
                    await wait_for(attempt_running(handle, 1), 60, "the first attempt, on host A")
                    await asyncio.sleep(1)
                    host_a.send_signal(signal.SIGSTOP)
                    partition.cut()
                    host_b = spawn_tools_worker(env_b)
                    await wait_for(attempt_running(handle, 2), 60, "the retry, on host B")
                    with (ws / "log.txt").open("ab") as f:
                        f.write(b"other\n")  # another writer, while it holds the lock
                    # B waits for the lock for longer than its heartbeat timeout, and is not retried.
                    await asyncio.sleep(2 * req.heartbeat_timeout_s)
                    assert (await pending_tool_call(handle)).attempt == 2
                await wait_for(lambda: asyncio.sleep(0, "entry" in (ws / "log.txt").read_text()), 30, "host B's write")
                host_a.send_signal(signal.SIGCONT)
                await wait_for(
                    lambda: asyncio.sleep(0, "not writing again" in worker_log(env_a)), 30, "host A's late attempt"
                )
                partition.heal()
                result = await handle.result()
    finally:
        await stop_async(host_a)
        if host_b is not None:
            await stop_async(host_b)
        await partition.close()

    assert (result.status, result.answer) == ("completed", "done")
    assert (ws / "log.txt").read_text() == "start\nother\nentry\n"
    history = [e async for e in handle.fetch_history_events()]
    [tool_call] = [
        e.event_id
        for e in history
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == RUN_TOOL
    ]
    [started] = [
        e.activity_task_started_event_attributes
        for e in history
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.scheduled_event_id == tool_call
    ]
    assert started.attempt == 2  # host B's, the only one that counts
    assert len(list((ws / ".stakeflow" / "ledger").glob("*.json"))) == 1
    assert not (tmp_path / "home-a" / "ledger").exists() and not (tmp_path / "home-b" / "ledger").exists()
