"""Traces as an OTLP backend reads them: real runs on a real `stakeflow worker` process, exported over
OTLP/HTTP to a receiver the test starts (tests/otlp_receiver.py) and to the DuckDB trace store, with
`stakeflow run --json` in a subprocess; read back through the store's own readers.

Both routes report cached tokens (the open route inside ``prompt_tokens``, Anthropic beside its
``input_tokens``), so every token figure has something to get wrong.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stakeflow.core import semconv as sc
from stakeflow.traces import TraceStore, cost_report, render_tree, summary_line, trace_tree
from tests.agent_script import agent, call, plan, think
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, Reply
from tests.otlp_receiver import OTLPReceiver, ReceivedSpan
from tests.support import EXAMPLE_WORKSPACE, open_endpoint_env, spawn_worker, worker_env, worker_log

PRICES = """
frontier_model = "claude-sonnet-4-6"

[prices."qwen-test"]
input_per_mtok = 0.2
output_per_mtok = 0.6
"""
# OpenAI-compatible: prompt_tokens includes the cached ones. Anthropic: input_tokens excludes cache reads and writes.
OPEN_USAGE = {"prompt_tokens": 975, "completion_tokens": 120, "cached_tokens": 243}
FRONTIER_USAGE = {
    "input_tokens": 1800,
    "output_tokens": 250,
    "cache_creation_input_tokens": 300,
    "cache_read_input_tokens": 3200,
}
GOAL = "Summarise notes.txt into summary.txt"


def script(write_reply: Any = None):
    """Plan and step 1 (read_file) on the open model; step 2 (write_file, high stakes) and the answer on the frontier."""
    write = call("write_file", path="summary.txt", content="grew 12%")
    return agent(
        plan(("Read the notes", "read_file"), ("Write the summary", "write_file")),
        {1: call("read_file", path="notes.txt"), 2: write_reply or write},
        answer="Wrote summary.txt",
    )


@dataclass
class WorkerRun:
    run: dict[str, Any]  # what `stakeflow run --json` printed
    received: list[ReceivedSpan]  # what the OTLP receiver got
    store: TraceStore


def home_with_workspace(root: Path, prices: str) -> tuple[Path, Path]:
    home, workspace = root / "home", root / "ws"
    home.mkdir()
    workspace.mkdir()
    (home / "stakeflow.toml").write_text(prices)
    (workspace / "notes.txt").write_text((EXAMPLE_WORKSPACE / "notes.txt").read_text())
    return home, workspace


def process_env(home: Path, client, otlp: OTLPReceiver, **extra: str) -> dict[str, str]:
    """A worker's (and the CLI's) environment: the session's dev server, OTLP to ``otlp``, no stray OTEL_*."""
    env = worker_env(home, client, f"t{uuid.uuid4().hex[:8]}", OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, **extra)
    for key in [k for k in env if k.startswith("OTEL_") and k not in extra and k != "OTEL_EXPORTER_OTLP_ENDPOINT"]:
        del env[key]
    return env


def run_on_worker(env: dict[str, str], workspace: Path, goal: str = GOAL) -> dict[str, Any]:
    """`stakeflow run --json` on a `stakeflow worker` process, which is SIGTERM'd once the run has returned."""
    worker = spawn_worker(env)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "stakeflow", "run", "--workspace", str(workspace), "--auto-approve", "--json", goal],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    assert out.returncode == 0, out.stderr + worker_log(env)
    assert worker.returncode == 0, worker_log(env)
    return json.loads(out.stdout)


def rows(store: TraceStore, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    with store.reader() as con:
        result = con.execute(sql, params or [])
        names = [d[0] for d in result.description]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


@pytest.fixture(scope="module")
async def priced_run(env, tmp_path_factory) -> WorkerRun:
    """Read on the open model, write on the frontier; the worker names itself with the standard variables."""
    home, workspace = home_with_workspace(tmp_path_factory.mktemp("priced"), PRICES)
    with (
        OTLPReceiver() as otlp,
        FakeOpenAIServer(model="qwen-test") as open_fake,
        FakeAnthropicServer() as frontier_fake,
    ):
        open_fake.script(script())
        frontier_fake.script(script())
        open_fake.usage, frontier_fake.usage = OPEN_USAGE, FRONTIER_USAGE
        process = process_env(
            home,
            env.client,
            otlp,
            **open_endpoint_env(open_fake.url),
            ANTHROPIC_API_KEY="sk-ant-test",
            ANTHROPIC_BASE_URL=frontier_fake.url,
            OTEL_SERVICE_NAME="stakeflow-eu",
            OTEL_RESOURCE_ATTRIBUTES="deployment.environment=staging,team=ops",
        )
        run = run_on_worker(process, workspace)
        received = list(otlp.spans)
    store = TraceStore(home / "traces.duckdb")
    store.sync()
    return WorkerRun(run, received, store)


@pytest.fixture(scope="module")
async def unpriced_run(env, tmp_path_factory) -> WorkerRun:
    """Three calls (plan, step, answer) to an open model that has no price; no OTEL_SERVICE_NAME."""
    home, workspace = home_with_workspace(tmp_path_factory.mktemp("unpriced"), 'frontier_model = "claude-sonnet-4-6"\n')
    with OTLPReceiver() as otlp, FakeOpenAIServer(model="qwen-unpriced") as open_fake:
        open_fake.script(agent(plan(("Think it over", None)), {1: think("thought")}, answer="done"))
        open_fake.usage = OPEN_USAGE
        process = process_env(
            home,
            env.client,
            otlp,
            **open_endpoint_env(open_fake.url, "qwen-unpriced"),
        )
        run = run_on_worker(process, workspace, "Think the plan over")
        received = list(otlp.spans)
    store = TraceStore(home / "traces.duckdb")
    store.sync()
    return WorkerRun(run, received, store)


# --- 14: a step is not an LLM call -----------------------------------------------------------


async def test_only_model_call_spans_carry_gen_ai_request_attributes(priced_run):
    """Backends (Phoenix, Langfuse, Datadog) count a span with gen_ai.* request attributes as an LLM call:
    only the four model calls may carry them, and the store still shows each step's model."""
    spans = priced_run.received
    chats = [s for s in spans if s.name.startswith(f"{sc.SPAN_CHAT} ")]
    assert len(chats) == 4 == priced_run.run["usage"]["requests"]
    with_request = [s for s in spans if any(k.startswith("gen_ai.request.") for k in s.attributes)]
    as_chat = [s for s in spans if s.attributes.get(sc.GEN_AI_OPERATION) == "chat"]
    assert (
        sorted(s.span_id for s in with_request)
        == sorted(s.span_id for s in as_chat)
        == sorted(s.span_id for s in chats)
    )
    steps = [s for s in spans if s.name == sc.SPAN_STEP and s.attributes.get(sc.PURPOSE) == "step"]
    assert sorted(s.attributes[sc.MODEL] for s in steps) == ["claude-sonnet-4-6", "qwen-test"]

    tree = trace_tree(priced_run.store, priced_run.run["workflow_id"])
    assert [(r["step"], r["model"]) for r in tree if r["name"] == sc.SPAN_STEP and r["purpose"] == "step"] == [
        (1, "qwen-test"),
        (2, "claude-sonnet-4-6"),
    ]
    assert [s["model"] for s in priced_run.run["steps"]] == ["qwen-test", "claude-sonnet-4-6"]


# --- 15: the standard resource variables -------------------------------------------------------


async def test_worker_resource_follows_otel_service_name_and_resource_attributes(priced_run, unpriced_run):
    named = {s.resource["service.name"] for s in priced_run.received}
    assert named == {"stakeflow-eu"}
    resource = priced_run.received[0].resource
    assert (resource["deployment.environment"], resource["team"], resource["stakeflow.process"]) == (
        "staging",
        "ops",
        "worker",
    )
    assert {r["service_name"] for r in rows(priced_run.store, "SELECT DISTINCT service_name FROM spans")} == {
        "stakeflow-eu"
    }
    # Unset: stakeflow's default name, the role beside it.
    assert {(s.resource["service.name"], s.resource["stakeflow.process"]) for s in unpriced_run.received} == {
        ("stakeflow", "worker")
    }


# --- 16: unpriced, never $0 ----------------------------------------------------------------------


async def test_a_run_whose_calls_are_all_unpriced_shows_no_amount(unpriced_run):
    run_id = unpriced_run.run["workflow_id"]
    assert unpriced_run.run["cost"]["unpriced_calls"] == 3
    assert unpriced_run.run["cost"]["line"].startswith("cost unpriced (open 3 calls unpriced · frontier 0 calls)")
    assert "$0.0000" not in unpriced_run.run["cost"]["line"]

    [run] = rows(
        unpriced_run.store,
        "SELECT model_calls, unpriced_calls, cost_usd, frontier_equivalent_usd FROM runs WHERE run_id = ?",
        [run_id],
    )
    assert run == {"model_calls": 3, "unpriced_calls": 3, "cost_usd": None, "frontier_equivalent_usd": None}
    [run_span] = rows(
        unpriced_run.store,
        "SELECT cost_usd, frontier_equivalent_usd, unpriced FROM spans WHERE name = ? AND run_id = ?",
        [sc.SPAN_RUN, run_id],
    )
    assert run_span == {"cost_usd": None, "frontier_equivalent_usd": None, "unpriced": True}
    [otlp_run_span] = [s for s in unpriced_run.received if s.name == sc.SPAN_RUN]
    assert otlp_run_span.attributes[sc.UNPRICED_CALLS] == 3

    tree = trace_tree(unpriced_run.store, run_id)
    assert (tree[0]["name"], tree[0]["cost_usd"], tree[0]["unpriced"]) == (sc.SPAN_RUN, None, True)
    assert "$" not in render_tree(tree).splitlines()[-1]

    report = cost_report(unpriced_run.store, by="run", run_id=run_id)
    assert (report["calls"], report["priced_calls"], report["unpriced_calls"]) == (3, 0, 3)
    assert [(r["run"], r["cost_usd"]) for r in report["rows"]] == [(run_id, None)]
    assert summary_line(report).startswith("total unpriced (3 model calls, none with a price)\nWARNING: 3 model")


# --- 17: one definition of input tokens ----------------------------------------------------------


async def test_input_tokens_agree_in_the_result_the_spans_the_runs_view_and_the_bill(priced_run):
    run_id = priced_run.run["workflow_id"]
    usage = priced_run.run["usage"]
    open_total = OPEN_USAGE["prompt_tokens"]  # includes the cached tokens
    frontier_total = sum(
        FRONTIER_USAGE[k] for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    assert usage == {
        "input_tokens": 2 * open_total + 2 * frontier_total,
        "uncached_input_tokens": 2 * (open_total - OPEN_USAGE["cached_tokens"]) + 2 * FRONTIER_USAGE["input_tokens"],
        "cache_read_tokens": 2 * OPEN_USAGE["cached_tokens"] + 2 * FRONTIER_USAGE["cache_read_input_tokens"],
        "cache_write_tokens": 2 * FRONTIER_USAGE["cache_creation_input_tokens"],
        "output_tokens": 2 * OPEN_USAGE["completion_tokens"] + 2 * FRONTIER_USAGE["output_tokens"],
        "requests": 4,
    }

    # Each span: input includes the cache; raw is what the provider sent.
    chats = sorted((s for s in priced_run.received if s.name.startswith("chat ")), key=lambda s: s.attributes[sc.STEP])
    assert [
        (s.attributes[sc.ROUTE], s.attributes[sc.GEN_AI_INPUT_TOKENS], s.attributes[sc.RAW_INPUT_TOKENS]) for s in chats
    ] == [("open", open_total, OPEN_USAGE["prompt_tokens"])] * 2 + [
        ("frontier", frontier_total, FRONTIER_USAGE["input_tokens"])
    ] * 2
    span_sums = {
        "input_tokens": sum(s.attributes[sc.GEN_AI_INPUT_TOKENS] for s in chats),
        "cache_read_tokens": sum(s.attributes[sc.GEN_AI_CACHE_READ] for s in chats),
        "cache_write_tokens": sum(s.attributes[sc.GEN_AI_CACHE_WRITE] for s in chats),
        "output_tokens": sum(s.attributes[sc.GEN_AI_OUTPUT_TOKENS] for s in chats),
    }
    assert span_sums == {k: usage[k] for k in span_sums}

    [run] = rows(
        priced_run.store,
        "SELECT input_tokens, cache_read_tokens, cache_write_tokens, output_tokens FROM runs WHERE run_id = ?",
        [run_id],
    )
    assert run == span_sums
    bill = cost_report(priced_run.store, run_id=run_id)
    assert {k: bill[k] for k in span_sums} == span_sums
    stored_raw = rows(
        priced_run.store,
        "SELECT route, raw_input_tokens FROM spans WHERE operation = 'chat' AND run_id = ? ORDER BY step",
        [run_id],
    )
    assert [(r["route"], r["raw_input_tokens"]) for r in stored_raw] == [
        (s.attributes[sc.ROUTE], s.attributes[sc.RAW_INPUT_TOKENS]) for s in chats
    ]


# --- 18: a SIGTERM'd worker flushes OTLP at once -------------------------------------------------


@pytest.mark.timeout(180)
async def test_sigterm_sends_the_finished_work_to_otlp_before_the_graceful_shutdown_ends(client, tmp_path):
    """SIGTERM while a model call is in flight: the spans of what already finished reach the backend at
    once, not after the in-flight call's graceful shutdown (up to 20 s), which a SIGKILL may cut short
    (`stakeflow down` sends one after 15 s). The batch timer is pushed out of reach
    (OTEL_BSP_SCHEDULE_DELAY) so that only the flush on SIGTERM can deliver them."""
    home, workspace = home_with_workspace(tmp_path, PRICES)
    with (
        OTLPReceiver() as otlp,
        FakeOpenAIServer(model="qwen-test") as open_fake,
        FakeAnthropicServer() as frontier_fake,
    ):
        blocked = Reply.delayed(120, call("write_file", path="summary.txt", content="late"))
        open_fake.script(script())
        frontier_fake.script(script(lambda body: blocked))
        process = process_env(
            home,
            client,
            otlp,
            **open_endpoint_env(open_fake.url),
            ANTHROPIC_API_KEY="sk-ant-test",
            ANTHROPIC_BASE_URL=frontier_fake.url,
            OTEL_BSP_SCHEDULE_DELAY="600000",
        )
        worker = spawn_worker(process)
        cli = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stakeflow",
                "run",
                "--workspace",
                str(workspace),
                "--auto-approve",
                "--json",
                "--no-wait",
                GOAL,
            ],
            env=process,
            stdout=subprocess.PIPE,
            text=True,
        )
        workflow_id = json.loads(cli.communicate(timeout=120)[0])["workflow_id"]
        try:
            while not frontier_fake.calls:  # plan and step 1 are done; step 2's call is in flight
                await asyncio.sleep(0.05)
            worker.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10  # well inside the graceful shutdown, which waits for the call
            finished = {"chat qwen-test": 2, "execute_tool read_file": 1, sc.SPAN_STEP: 2}
            while time.monotonic() < deadline and not all(
                sum(s.name == name for s in otlp.spans) >= n for name, n in finished.items()
            ):
                await asyncio.sleep(0.1)
            received = list(otlp.spans)
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(30)
            await client.get_workflow_handle(workflow_id).terminate("test over")
    assert worker.poll() == -signal.SIGKILL  # it was still in its graceful shutdown: the flush came first
    names = sorted(s.name for s in received if s.attributes.get(sc.RUN_ID) == workflow_id)
    assert names == ["chat qwen-test", "chat qwen-test", "execute_tool read_file", sc.SPAN_STEP, sc.SPAN_STEP]
    store = TraceStore(home / "traces.duckdb")
    in_store = {r["span_id"] for r in rows(store, "SELECT span_id FROM spans")}
    assert in_store <= {s.span_id for s in received}  # the backend lost nothing the store has
