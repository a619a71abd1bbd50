"""Worker metrics: a real `stakeflow worker` process serves Prometheus text on STAKEFLOW_METRICS_PORT, scraped
during a run (the Temporal SDK's metrics) and after it (stakeflow's calls, cost, escalations, runs)."""

from __future__ import annotations

import asyncio
import re
import threading
import uuid

import httpx
import pytest

from stakeflow.services import runs
from tests.agent_script import agent, call, plan, think
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, Reply
from tests.support import free_port, make_settings, open_endpoint_env, spawn_worker, worker_env, worker_log
from tests.workflow_support import SECRET_KEY


def samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of one metric in Prometheus text format."""
    found = {}
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})?\s+(\S+)$", line)
        if m:
            found[m.group(1) or ""] = float(m.group(2))
    return found


def total(text: str, name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for k, v in samples(text, name).items() if all(w in k for w in want))


async def scrape(url: str) -> str:
    # A worker process imports all of stakeflow before it serves metrics: seconds on a loaded machine, so a minute.
    async with httpx.AsyncClient(timeout=5) as http:
        for _ in range(600):
            try:
                r = await http.get(url)
                if r.status_code == 200:
                    return r.text
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    pytest.fail(f"nothing answered {url}")


async def test_a_worker_serves_sdk_and_stakeflow_metrics(client, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    release = threading.Event()

    def slow_then_invalid(body):
        release.wait(30)  # the run stays in flight until the test has scraped once
        return Reply.raw("not json")

    port = free_port()
    prefix = f"t{uuid.uuid4().hex[:8]}"
    home = tmp_path / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text('[prices."qwen-test"]\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n')
    with FakeOpenAIServer(model="qwen-test") as open_fake, FakeAnthropicServer() as frontier_fake:
        the_plan = plan(("Compute", "calculator"), ("Think", None))
        open_fake.script(agent(the_plan, {1: slow_then_invalid, 2: think("thought")}, answer="42"))
        frontier_fake.script(agent(the_plan, {1: call("calculator", expression="6*7")}))
        settings = make_settings(
            tmp_path,
            queue_prefix=prefix,
            open_base_url=open_fake.url,
            open_model="qwen-test",
            open_dialect="vllm",
            anthropic_api_key=SECRET_KEY,
            anthropic_base_url=frontier_fake.url,
            frontier_model="claude-test",
        )
        env = worker_env(
            home,
            client,
            prefix,
            **open_endpoint_env(open_fake.url),
            ANTHROPIC_API_KEY=SECRET_KEY,
            ANTHROPIC_BASE_URL=frontier_fake.url,
            STAKEFLOW_FRONTIER_MODEL="claude-test",
            STAKEFLOW_METRICS_PORT=str(port),
        )
        worker = spawn_worker(env)
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            handle = await runs.start_run(client, settings, runs.build_request(settings, "What is 6*7?", workspace=ws))
            for _ in range(200):  # until the run waits on its first step and the worker has reported its pollers
                during = await scrape(url)
                if any("Now step 1" in c.raw for c in open_fake.calls) and samples(during, "temporal_num_pollers"):
                    break
                await asyncio.sleep(0.1)
            release.set()
            result = await handle.result()
            await asyncio.sleep(1.5)  # the last spans end just after the result
            after = await scrape(url)
        finally:
            release.set()
            worker.terminate()
            worker.wait(30)
    assert f"metrics on http://127.0.0.1:{port}/metrics" in worker_log(env)
    assert result.steps[0].escalated
    # The SDK's own metrics, while the run is in flight: pollers and slots per task queue.
    assert total(during, "temporal_num_pollers", task_queue=f"{prefix}-workflows") >= 1
    assert samples(during, "temporal_worker_task_slots_available")
    # stakeflow's: the plan, two invalid open attempts, step 2 and the answer on open; one frontier call.
    assert total(after, "stakeflow_model_calls", route="open") == 5
    assert total(after, "stakeflow_model_calls", route="frontier", model="claude-test") == 1
    assert total(after, "stakeflow_escalations", route="frontier") == 1
    assert total(after, "stakeflow_runs", status="completed") == 1
    priced = total(after, "stakeflow_model_cost_usd_count", route="open", model="qwen-test")
    assert priced == 5 and total(after, "stakeflow_model_cost_usd_sum", route="open") > 0
    assert total(after, "stakeflow_model_unpriced_calls", route="frontier") == 1  # never counted as $0
    assert total(after, "stakeflow_model_tokens", route="open", kind="input") > 0
    assert SECRET_KEY not in after
