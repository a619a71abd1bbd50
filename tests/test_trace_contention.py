"""Trace store contention: three worker processes export spans while `stakeflow costs` reads in a loop
for a minute. Nothing lost, nothing doubled, no reader error."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid

import pytest
from click.testing import CliRunner

from stakeflow.cli import cli
from stakeflow.services import runs
from stakeflow.traces import TraceStore
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer, Reply
from tests.support import make_settings, open_endpoint_env, spawn_worker, worker_env

READ_FOR_S = 60
RUNS = 40


@pytest.mark.timeout(600)
async def test_three_workers_and_a_reader_for_a_minute(client, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text('[prices."qwen-test"]\ninput_per_mtok = 0.2\noutput_per_mtok = 0.6\n')
    ws = tmp_path / "ws"
    ws.mkdir()
    prefix = f"t{uuid.uuid4().hex[:8]}"
    with FakeOpenAIServer(model="qwen-test") as open_fake:
        # Slow model calls spread the runs over the whole minute.
        open_fake.script(
            agent(
                plan(("Compute", "calculator"), ("Compute again", "calculator")),
                {
                    1: lambda b: Reply.delayed(1.0, call("calculator", expression="1+1")),
                    2: lambda b: Reply.delayed(1.0, call("calculator", expression="2+2")),
                },
                answer=lambda b: Reply.delayed(0.5, "4"),
            )
        )
        env = worker_env(
            home,
            client,
            prefix,
            **open_endpoint_env(open_fake.url),
        )
        workers = [spawn_worker(env) for _ in range(3)]
        monkeypatch.setenv("STAKEFLOW_HOME", str(home))
        settings = make_settings(tmp_path, queue_prefix=prefix, open_base_url=open_fake.url, open_model="qwen-test")
        try:
            handles = []
            for i in range(RUNS):
                handles.append(
                    await runs.start_run(
                        client, settings, runs.build_request(settings, f"contention {i}", workspace=ws)
                    )
                )
                await asyncio.sleep(READ_FOR_S / RUNS / 2)  # keep starting runs through the first half
            results = asyncio.gather(*(h.result() for h in handles))
            reads, totals, deadline = 0, [], time.monotonic() + READ_FOR_S
            while time.monotonic() < deadline:
                out = await asyncio.to_thread(CliRunner().invoke, cli, ["costs", "--json"], catch_exceptions=False)
                assert out.exit_code == 0, out.output
                totals.append(json.loads(out.output)["total_usd"])
                reads += 1
            done = await asyncio.wait_for(results, 120)
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait(60)
    assert [r.status for r in done] == ["completed"] * RUNS
    assert reads >= 10
    assert totals == sorted(totals)  # readers only ever saw the bill grow
    store = TraceStore(home / "traces.duckdb")
    store.sync(budget_s=None)
    with store.reader() as con:
        spans, distinct, chats, run_spans = con.execute(
            "SELECT count(*), count(DISTINCT span_id), count(*) FILTER (WHERE name LIKE 'chat %'), "
            "count(DISTINCT run_id) FILTER (WHERE name LIKE 'chat %') FROM spans"
        ).fetchone()
    assert spans == distinct  # nothing twice
    assert chats == RUNS * 4 and run_spans == RUNS  # plan, 2 steps, answer: nothing lost
