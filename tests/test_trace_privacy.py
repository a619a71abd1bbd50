"""Private content never leaves through traces unless a separate, explicit setting says so (issue 20, "Also from
the review"): with STAKEFLOW_TRACE_CONTENT=1 a private run's prompts and completions stay out of its spans (only
STAKEFLOW_TRACE_PRIVATE_CONTENT=1 puts them there), and a failed private step's span status carries no model output.

A real `stakeflow worker` process exporting over OTLP/HTTP to a receiver the test starts and to the DuckDB trace
store; `stakeflow run` in a subprocess; scripted models. Every byte the receiver got and every stored span is searched.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from stakeflow.traces import TraceStore
from tests.agent_script import agent, plan, think
from tests.fakes import FakeOpenAIServer
from tests.otlp_receiver import OTLPReceiver
from tests.support import open_endpoint_env, spawn_worker, worker_env, worker_log

PUBLIC_MARK = "the public goal PUBMARK-7731"
PRIVATE_MARK = "the salary of Ingrid PRIVMARK-4402"


def _runs(client, tmp_path: Path, open_fake, runs: list[list[str]], **extra: str):
    """Each ``stakeflow run`` of ``runs`` on one `stakeflow worker` process with ``extra`` in its environment;
    (their exit codes and output, every OTLP request body, every span in the trace store as text)."""
    home, ws = tmp_path / "home", tmp_path / "ws"
    home.mkdir()
    ws.mkdir()
    with OTLPReceiver() as otlp:
        env = worker_env(
            home,
            client,
            f"t{uuid.uuid4().hex[:8]}",
            OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
            **open_endpoint_env(open_fake.url),
            **extra,
        )
        worker = spawn_worker(env)
        try:
            done = [
                subprocess.run(
                    [sys.executable, "-m", "stakeflow", "run", "--workspace", str(ws), *args],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=180,
                )
                for args in runs
            ]
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
        assert worker.returncode == 0, worker_log(env)
        sent = b"".join(otlp.bodies).decode("utf-8", errors="replace")
    store = TraceStore(home / "traces.duckdb")
    store.sync()
    with store.reader() as con:
        stored = "\n".join(str(row) for row in con.execute("SELECT * FROM spans").fetchall())
    return done, sent, stored


@pytest.fixture
def open_fake():
    with FakeOpenAIServer(model="qwen-test") as server:
        server.script(agent(plan(("Think it over", None)), {1: think("thought it over")}, answer="done"))
        yield server


async def test_trace_content_leaves_out_private_runs(client, tmp_path, open_fake):
    done, sent, stored = _runs(
        client,
        tmp_path,
        open_fake,
        [[PUBLIC_MARK], ["--sensitivity", "private", PRIVATE_MARK]],
        STAKEFLOW_TRACE_CONTENT="1",
    )
    assert [d.returncode for d in done] == [0, 0], [d.stderr for d in done]
    assert "PUBMARK-7731" in sent and "PUBMARK-7731" in stored  # content is on: the public run's prompts are there
    assert "PRIVMARK-4402" not in sent, "a private run's prompt went to the OTLP backend"
    assert "PRIVMARK-4402" not in stored


async def test_a_separate_setting_traces_private_content(client, tmp_path, open_fake):
    done, sent, stored = _runs(
        client,
        tmp_path,
        open_fake,
        [["--sensitivity", "private", PRIVATE_MARK]],
        STAKEFLOW_TRACE_CONTENT="1",
        STAKEFLOW_TRACE_PRIVATE_CONTENT="1",
    )
    assert done[0].returncode == 0, done[0].stderr
    assert "PRIVMARK-4402" in sent and "PRIVMARK-4402" in stored


async def test_a_failed_private_steps_span_status_carries_no_model_output(client, tmp_path, open_fake):
    """The open model's invalid output is quoted in the step's failure (up to 60 characters): it stays with the
    run (its error, `stakeflow status`), not in the span status that goes to the trace backends."""
    open_fake.script(
        agent(plan(("Compute it", "calculator")), {1: {"tool_calls": "OUTMARK-5150 salary 123456", "result": "x"}})
    )
    done, sent, stored = _runs(client, tmp_path, open_fake, [["--sensitivity", "private", "Think"]])
    assert done[0].returncode == 1 and "OUTMARK-5150" in done[0].stderr  # the user is told
    assert "output invalid" in stored  # the step's failure is traced, without what the model wrote
    assert "OUTMARK-5150" not in sent and "OUTMARK-5150" not in stored
