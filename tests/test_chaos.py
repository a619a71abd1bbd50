"""Worker loss under load: many runs, a chaos loop SIGKILLs and restarts the worker process.

Every run must complete, and every write_file side effect must happen exactly once.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import uuid

import pytest

from stakeflow.services import runs
from stakeflow.traces import TraceStore
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer, Reply, prompt_text
from tests.support import make_settings, open_endpoint_env, spawn_worker, worker_env

RUNS = 50
MIN_KILLS = 10


def responder():
    def name_of(body) -> str:
        return re.search(r"chaos-run-(\d+)", prompt_text(body)).group(0)

    def slow(item):
        return lambda body: Reply.delayed(random.uniform(0.05, 0.4), item(body) if callable(item) else item)

    return agent(
        plan(("Log the start", "write_file"), ("Compute", "calculator"), ("Log the end", "write_file")),
        {
            1: slow(lambda b: call("write_file", path=f"{name_of(b)}.log", content="start\n", append=True)),
            2: slow(call("calculator", expression="6*7")),
            3: slow(lambda b: call("write_file", path=f"{name_of(b)}.log", content="end\n", append=True)),
        },
        answer=lambda body: Reply.delayed(random.uniform(0.05, 0.3), "done"),
    )


@pytest.mark.timeout(600)
async def test_sigkill_chaos_every_run_completes_and_writes_once(client, tmp_path):
    random.seed(20261128)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    home = tmp_path / "home"
    prefix = f"t{uuid.uuid4().hex[:8]}"
    with FakeOpenAIServer(model="qwen-test") as open_fake:
        open_fake.script(responder())
        env = worker_env(
            home,
            client,
            prefix,
            **open_endpoint_env(open_fake.url),
        )
        settings = make_settings(tmp_path, queue_prefix=prefix, open_base_url=open_fake.url, open_model="qwen-test")
        handles = []
        for i in range(RUNS):
            req = runs.build_request(settings, f"Log chaos-run-{i}", stakes="low", workspace=workspace)
            req.heartbeat_timeout_s = 2
            handles.append(await runs.start_run(client, settings, req, f"chaos-{prefix}-{i}"))

        worker = spawn_worker(env)
        kills = 0
        results_task = asyncio.gather(*(h.result() for h in handles))
        try:
            while not results_task.done():
                await asyncio.wait([results_task], timeout=random.uniform(1.5, 4.0))
                if results_task.done() or kills >= MIN_KILLS + 5:
                    continue
                worker.send_signal(signal.SIGKILL)
                worker.wait(10)
                kills += 1
                worker = spawn_worker(env)
            results = await results_task
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)

    assert kills >= MIN_KILLS, f"only {kills} kills: the runs finished too fast to test anything"
    assert [r.status for r in results] == ["completed"] * RUNS
    for i in range(RUNS):
        assert (workspace / f"chaos-run-{i}.log").read_text() == "start\nend\n", f"run {i}"

    # Spans: run and step spans are exported before their workflow task completes, so every step is
    # there exactly once; batched call spans of a killed attempt may be lost (its retry has its own).
    store = TraceStore(home / "traces.duckdb")
    store.sync(budget_s=None)
    with store.reader() as con:
        dupes = con.execute("SELECT count(*) - count(DISTINCT span_id) FROM spans").fetchone()[0]
        steps = con.execute("SELECT count(*) FROM spans WHERE name = 'stakeflow.step' AND purpose = 'step'").fetchone()[
            0
        ]
    assert dupes == 0
    print(f"\nchaos: {RUNS} runs, {kills} kills, {steps}/{RUNS * 3} step spans stored")
    assert steps == RUNS * 3
