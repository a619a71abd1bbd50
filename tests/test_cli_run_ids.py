"""A run is found by its workflow id or by its Temporal run id, in every command that takes one; an id
that names no run is an error (exit code 1) saying what was searched, never an empty report or $0.

One real run on the session's dev server, on a real worker process (so its spans reach the DuckDB
trace store); it continues as new after its first step, so its first run id (what `run --json`
prints) is not its latest.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from stakeflow.cli import cli
from stakeflow.services import runs
from tests.agent_script import agent, plan, think
from tests.fakes import FakeOpenAIServer
from tests.support import (
    free_port,
    make_settings,
    open_endpoint_env,
    running_workers,
    spawn_worker,
    worker_env,
    worker_log,
)


@dataclass
class Run:
    home: Path
    address: str
    workflow_id: str
    first_run_id: str  # what `run --json` prints as run_id
    latest_run_id: str  # after continue-as-new
    queue_prefix: str


@pytest.fixture(scope="module")
async def finished(env, tmp_path_factory) -> Run:
    client = env.client
    tmp = tmp_path_factory.mktemp("run-ids")
    prefix = f"t{uuid.uuid4().hex[:8]}"
    with FakeOpenAIServer(model="qwen-test") as open_fake:
        open_fake.script(
            agent(
                plan(("Think", None), ("Think again", None)),
                {1: think("one"), 2: think("two")},
                answer="Thought twice.",
            )
        )
        wenv = worker_env(
            tmp / "home",
            client,
            prefix,
            **open_endpoint_env(open_fake.url),
        )
        worker = spawn_worker(wenv)
        try:
            settings = make_settings(tmp, queue_prefix=prefix, open_base_url=open_fake.url, open_model="qwen-test")
            req = runs.build_request(settings, "Think twice")
            req.steps_per_history = 1
            handle = await runs.start_run(client, settings, req)
            result = await handle.result()
        finally:
            worker.send_signal(signal.SIGTERM)  # graceful: flushes buffered spans
            worker.wait(60)
        assert worker.returncode == 0, worker_log(wenv)
    assert result.answer == "Thought twice."
    latest = (await client.get_workflow_handle(handle.id).describe()).run_id
    assert handle.result_run_id and latest != handle.result_run_id  # it did continue as new
    return Run(tmp / "home", client.service_client.config.target_host, handle.id, handle.result_run_id, latest, prefix)


@pytest.fixture
def at(monkeypatch):
    """Point the CLI at a home and a Temporal server."""

    def point(home: Path, address: str) -> None:
        monkeypatch.setenv("STAKEFLOW_HOME", str(home))
        monkeypatch.setenv("STAKEFLOW_TEMPORAL_ADDRESS", address)

    return point


async def cli_run(*args: str) -> tuple[int, str]:
    out = await asyncio.to_thread(CliRunner().invoke, cli, list(args), catch_exceptions=False)
    return out.exit_code, out.output


async def cli_json(*args: str):
    code, out = await cli_run(*args, "--json")
    assert code == 0, out
    return json.loads(out)


def stakeflow(run: Run, *args: str) -> subprocess.CompletedProcess:
    """The real console entry point (main(), its exit code), in a subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STAKEFLOW_", "ANTHROPIC_"))}
    env.update(STAKEFLOW_HOME=str(run.home), STAKEFLOW_TEMPORAL_ADDRESS=run.address)
    return subprocess.run(
        [sys.executable, "-m", "stakeflow", *args], env=env, capture_output=True, text=True, timeout=120
    )


async def test_status_and_result_find_the_run_by_either_id(env, finished, at, tmp_path):
    at(finished.home, finished.address)
    # A workflow worker answers the progress query (without one, each status waits for it to time out).
    async with running_workers(env.client, make_settings(tmp_path, queue_prefix=finished.queue_prefix), ("workflows",)):
        for ident in (finished.workflow_id, finished.first_run_id, finished.latest_run_id):
            status = await cli_json("status", ident)
            assert (status["workflow_id"], status["run_id"], status["status"]) == (
                finished.workflow_id,
                finished.latest_run_id,
                "completed",
            ), ident
            result = await cli_json("result", ident)
            assert (result["workflow_id"], result["answer"]) == (finished.workflow_id, "Thought twice."), ident
        code, out = await cli_run("status", finished.first_run_id)
    assert code == 0 and out.startswith(f"{finished.workflow_id}: completed\n"), out
    assert "step 2/2 · ok · open · qwen-test" in out


async def test_trace_and_costs_find_the_run_by_either_id(finished, at):
    at(finished.home, finished.address)
    tree = await cli_json("trace", finished.workflow_id)
    assert tree[0]["name"] == "stakeflow.run"
    bill = await cli_json("costs", "--run", finished.workflow_id)
    assert bill["run_id"] == finished.workflow_id and bill["calls"] == 4  # plan, two steps, answer
    for run_id in (finished.first_run_id, finished.latest_run_id):
        assert await cli_json("trace", run_id) == tree
        assert await cli_json("costs", "--run", run_id) == bill


@pytest.mark.parametrize("ident", [str(uuid.uuid4()), "task-nosuchrun", "it's-not-an-id"])
async def test_an_unknown_id_is_an_error_naming_what_was_searched(finished, ident):
    for args in (["status", ident], ["result", ident], ["trace", ident], ["costs", "--run", ident]):
        done = await asyncio.to_thread(stakeflow, finished, *args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert f"no run '{ident}'" in done.stderr and "workflow ids and run ids" in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr and done.stdout == "", (args, done.stdout)


async def test_the_other_commands_refuse_an_unknown_id(finished, at):
    at(finished.home, finished.address)
    ident = str(uuid.uuid4())
    for args in (["cancel", ident], ["approve", ident, "1"], ["reject", ident, "1", "--note", "no"]):
        code, out = await cli_run(*args)
        assert code == 1 and f"no run '{ident}' in namespace default: searched workflow ids and run ids" in out, out


async def test_a_run_temporal_knows_without_spans_is_an_error_not_zero(finished, at, tmp_path):
    at(tmp_path / "empty-home", finished.address)  # the same server, a trace store without the run
    code, out = await cli_run("trace", finished.workflow_id)
    assert code == 1 and f"run '{finished.workflow_id}' has no spans in the trace store" in out, out
    code, out = await cli_run("costs", "--run", finished.first_run_id)
    assert code == 1, out
    assert f"run '{finished.first_run_id}' (workflow id {finished.workflow_id}) has no spans" in out


async def test_without_temporal_the_store_alone_answers_for_a_workflow_id(finished, at):
    at(finished.home, f"127.0.0.1:{free_port()}")  # nothing listens there
    assert [r["name"] for r in await cli_json("trace", finished.workflow_id)][0] == "stakeflow.run"
    assert (await cli_json("costs", "--run", finished.workflow_id))["calls"] == 4
    code, out = await cli_run("trace", finished.latest_run_id)
    assert code == 1 and "could not be looked up as a Temporal run id" in out and "cannot reach Temporal" in out, out


async def test_a_workflow_of_another_type_is_not_a_run(env, at, tmp_path):
    client = env.client
    wf_id = f"other-{uuid.uuid4().hex[:8]}"
    await client.start_workflow("SomethingElse", id=wf_id, task_queue=f"nobody-{uuid.uuid4().hex[:8]}")
    try:
        at(tmp_path / "home", client.service_client.config.target_host)
        code, out = await cli_run("status", wf_id)
        assert code == 1 and f"'{wf_id}' in namespace default is a SomethingElse workflow, not a stakeflow run" in out
    finally:
        await client.get_workflow_handle(wf_id).terminate()
