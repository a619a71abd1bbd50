"""Every phase of a run reaches the trace store, however it ends: a failing step, a cancel, continue-as-new.

Temporal's replay-safe span never ends a span that an exception escaped unless the exception fails the
workflow; a StepFailure, a cancellation or a continue-as-new passing through a span left it out of the
store. Real worker subprocesses (their tracing writes the store), the real dev server, scripted models.
"""

from __future__ import annotations

import signal
import uuid

import pytest
from temporalio.client import WorkflowFailureError

from stakeflow.agents.types import Progress
from stakeflow.core.contracts import PROGRESS_QUERY
from stakeflow.services import runs
from stakeflow.traces import TraceStore
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer, Reply
from tests.support import make_settings, open_endpoint_env, spawn_worker, worker_env, worker_log


@pytest.fixture
def open_fake():
    with FakeOpenAIServer(model="qwen-test") as server:
        yield server


class TracedWorker:
    """A `stakeflow worker` subprocess on its own queues and home; stopped with SIGTERM (flushes spans)."""

    def __init__(self, client, tmp_path, open_fake):
        self.home = tmp_path / "home"
        self.prefix = f"t{uuid.uuid4().hex[:8]}"
        self.env = worker_env(
            self.home,
            client,
            self.prefix,
            **open_endpoint_env(open_fake.url),
        )
        self.settings = make_settings(
            tmp_path, queue_prefix=self.prefix, open_base_url=open_fake.url, open_model="qwen-test"
        )
        self.ws = tmp_path / "ws"
        self.ws.mkdir()
        (self.ws / "notes.txt").write_text("Revenue grew 12%.\n")

    def __enter__(self):
        self.proc = spawn_worker(self.env)
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        assert self.proc.returncode == 0, worker_log(self.env)

    def rows(self, sql: str, params: list):
        with TraceStore(self.home / "traces.duckdb").reader() as con:
            return con.execute(sql, params).fetchall()


async def test_the_step_that_fails_a_run_is_in_the_store_once_with_its_error(client, tmp_path, open_fake):
    open_fake.script(agent(plan(("Compute", "calculator")), {1: Reply.error(400, "this request is not allowed")}))
    with TracedWorker(client, tmp_path, open_fake) as w:
        req = runs.build_request(w.settings, "What is 2+2?", workspace=w.ws)
        handle = await runs.start_run(client, w.settings, req)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    steps = w.rows(
        "SELECT span_id, step, purpose, status, status_code, status_message FROM spans "
        "WHERE run_id = ? AND name = 'stakeflow.step' ORDER BY step",
        [handle.id],
    )
    assert [(s[1], s[2]) for s in steps] == [(0, "plan"), (1, "step")]
    failing = steps[1]
    assert failing[3] == "failed" and failing[4] == "ERROR"
    assert "failed on the open model" in failing[5] and "not allowed" in failing[5]
    [chat] = w.rows(
        "SELECT parent_span_id FROM spans WHERE run_id = ? AND operation = 'chat' AND step = 1", [handle.id]
    )
    assert chat[0] == failing[0], "the failing step's model call hangs under its step span"
    [run] = w.rows("SELECT status FROM runs WHERE run_id = ?", [handle.id])
    assert run == ("failed",)


async def test_a_run_that_continues_as_new_has_a_run_span_per_generation(client, tmp_path, open_fake):
    steps = [(f"Compute {i}", "calculator") for i in range(1, 6)]
    open_fake.script(
        agent(plan(*steps), {i: call("calculator", expression=f"{i}+1") for i in range(1, 6)}, answer="done")
    )
    with TracedWorker(client, tmp_path, open_fake) as w:
        req = runs.build_request(w.settings, "Five sums", workspace=w.ws, max_steps=5)
        req.steps_per_history = 2
        handle = await runs.start_run(client, w.settings, req)
        await handle.result()
    generations = w.rows(
        "SELECT status FROM spans WHERE run_id = ? AND name = 'stakeflow.run' ORDER BY start_time", [handle.id]
    )
    assert generations == [("continued_as_new",), ("continued_as_new",), ("completed",)]
    step_spans = w.rows(
        "SELECT step FROM spans WHERE run_id = ? AND name = 'stakeflow.step' ORDER BY step", [handle.id]
    )
    assert [s[0] for s in step_spans] == [0, 1, 2, 3, 4, 5, 6]  # plan, five steps, answer: each once


async def test_a_step_cancelled_while_waiting_is_in_the_store_as_canceled(client, tmp_path, open_fake):
    open_fake.script(
        agent(plan(("Write it down", "write_file", "high")), {1: call("write_file", path="out.txt", content="x")})
    )
    with TracedWorker(client, tmp_path, open_fake) as w:
        req = runs.build_request(w.settings, "Write x to out.txt", workspace=w.ws)
        handle = await runs.start_run(client, w.settings, req)
        for _ in range(300):
            if 1 in (await handle.query(PROGRESS_QUERY, result_type=Progress)).awaiting_approval:
                break
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    rows = w.rows(
        "SELECT step, status FROM spans WHERE run_id = ? AND name = 'stakeflow.step' ORDER BY step", [handle.id]
    )
    assert rows == [(0, None), (1, "canceled")]
