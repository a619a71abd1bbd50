"""The Python client, ``from stakeflow import Client``, on the suite's dev server with real workers (a `stakeflow
worker` process where traces are read, in-process workers elsewhere) and the scripted open model. The README's
"Use it from Python" example runs here as written.
"""

from __future__ import annotations

import asyncio
import getpass
import signal
import subprocess
import sys
import uuid
from datetime import timedelta

import pytest

from stakeflow import Client
from stakeflow.agents.types import RunOptions, TaskRequest, TaskResult, ToolCall
from stakeflow.client import CostReport, RunHandle, TraceSpan
from stakeflow.core.errors import InputError, RunFailed, ServiceError
from stakeflow.services import reports, runs
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer
from tests.support import (
    EXAMPLE_WORKSPACE,
    REPO,
    free_port,
    make_settings,
    open_endpoint_env,
    open_settings,
    running_workers,
    spawn_worker,
    worker_env,
)

ANSWER = "Revenue grew 12% over Q2, driven by the Nordic region."
READ_ONLY = agent(plan(("Read the notes", "read_file")), {1: call("read_file", path="notes.txt")}, answer=ANSWER)
WRITES = agent(
    plan(("Read the notes", "read_file"), ("Write the summary", "write_file")),
    {1: call("read_file", path="notes.txt"), 2: call("write_file", path="summary.txt", content="grew 12%\n")},
    answer="Wrote summary.txt",
)
PRICES = '[prices."qwen-test"]\ninput_per_mtok = 0.2\noutput_per_mtok = 0.6\n'


def readme_python(heading: str) -> list[str]:
    """The ```python blocks under ``heading`` ("## Use it from Python") up to the next heading, as written."""
    blocks: list[str] = []
    inside: list[str] | None = None
    for line in (REPO / "README.md").read_text().split(f"\n{heading}\n", 1)[1].split("\n"):
        if inside is None and line.startswith("#"):
            break  # the next heading
        if inside is None and line == "```python":
            inside = []
        elif inside is not None and line == "```":
            blocks.append("\n".join(inside) + "\n")
            inside = None
        elif inside is not None:
            inside.append(line)
    return blocks


@pytest.fixture
def open_fake():
    with FakeOpenAIServer(model="qwen-test") as server:
        yield server


@pytest.fixture
def workspace(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text(ANSWER + "\n")
    return ws


@pytest.fixture
def settings(tmp_path, client, open_fake):
    return open_settings(tmp_path, client, open_fake)


def ended_cleanly(out: subprocess.CompletedProcess) -> None:
    """Exit code 0, or the one crash temporalio is known for: an abort or a segfault in interpreter finalization
    after a client or worker was used (sdk-python#300, DESIGN.md; about one short script in 30-90 here), once the
    example has printed everything (its last line checked by the caller). Anything else fails."""
    finalizing = out.returncode in (-6, -11) and ("finalizing" in out.stderr or out.returncode == -11)
    assert out.returncode == 0 or finalizing, f"exit {out.returncode}: {out.stderr[-3000:]}"


def cli_json(*args: str):
    """A CLI command's --json output (click's runner, in this process)."""
    import json

    from click.testing import CliRunner

    from stakeflow.cli import cli

    out = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


async def waiting(handle: RunHandle, step: int) -> None:
    """Until ``step`` of the run waits for approval, as ``handle.status()`` tells it (30 s at most)."""
    for _ in range(300):
        info = await handle.status()
        if info.progress is not None and step in info.progress.awaiting_approval:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"step {step} of {handle.workflow_id} never waited for approval")


async def test_the_readme_example_runs_as_written(client, tmp_path, open_fake, monkeypatch):
    """The example, in its own process, against a real `stakeflow worker` process (which traces), from the repo."""
    [example] = readme_python("## Use it from Python")
    open_fake.script(READ_ONLY)
    home = tmp_path / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text(PRICES)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    # The worker exports model-call spans every 2 s, not 0.5 s: the example reads the trace and the bill of a run
    # that has just ended, before the last call's span has come, unless the client waits for it.
    env = worker_env(home, client, prefix, **open_endpoint_env(open_fake.url), OTEL_BSP_SCHEDULE_DELAY="2000")
    settings = make_settings(
        tmp_path,
        home=home,
        queue_prefix=prefix,
        temporal_address=env["STAKEFLOW_TEMPORAL_ADDRESS"],
        open_base_url=open_fake.url,
        open_model="qwen-test",
        open_dialect="vllm",
    )
    worker = spawn_worker(env)
    try:
        (tmp_path / "example.py").write_text(example)
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(tmp_path / "example.py")],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        # `stakeflow trace --json` read as a run ends waits for its last call too (the CLI and the client share it).
        for name in ("STAKEFLOW_HOME", "STAKEFLOW_TEMPORAL_ADDRESS", "STAKEFLOW_QUEUE_PREFIX"):
            monkeypatch.setenv(name, env[name])
        handle = await (await Client.connect(settings)).start("Summarise notes.txt", workspace=EXAMPLE_WORKSPACE)
        assert (await handle.result()).answer == ANSWER
        worker.send_signal(signal.SIGSTOP)  # its pending batch of model-call spans waits with it, for 1.5 s
        asyncio.get_running_loop().call_later(1.5, worker.send_signal, signal.SIGCONT)
        rows = await asyncio.to_thread(cli_json, "trace", handle.workflow_id)
        assert [r["name"] for r in rows].count("chat qwen-test") == 3, rows
    finally:
        worker.send_signal(signal.SIGCONT)
        worker.send_signal(signal.SIGTERM)  # graceful: its last model-call spans reach the store
        worker.wait(60)
    ended_cleanly(out)
    # (Temporal's core may log a warning to stdout on a loaded machine: the example's lines are found, not counted.)
    lines = out.stdout.splitlines()
    [first] = [line for line in lines if line.startswith("run task-")]
    workflow_id = first.split()[1]
    assert first == f"run {workflow_id} · {settings.ui_url(workflow_id)}"
    assert "step 1 · open · qwen-test · read_file — tool read_file is read-only; planner assessed low stakes" in lines
    assert ANSWER in lines
    assert "stakeflow.run" in out.stdout and "chat qwen-test" in out.stdout, out.stdout  # the trace
    assert "3 model calls" in out.stdout, out.stdout  # every call's span, the last one too
    assert any(line.startswith("total $") and "$0.0000 " not in line for line in lines), out.stdout  # priced

    # What the example read, read again now that every span is in: typed, and the CLI's figures.
    sf = await Client.connect(settings)
    report = await sf.costs(run=workflow_id)
    assert isinstance(report, CostReport) and (report.calls, report.priced_calls, report.run_id) == (3, 3, workflow_id)
    assert report.total_usd > 0 and report.rows[0]["model"] == "qwen-test"
    trace = await sf.trace(workflow_id)
    names = ["  " * s.depth + s.name for s in trace.spans]
    assert names[:3] == ["stakeflow.run", "  stakeflow.step", "    chat qwen-test"]
    assert all(isinstance(s, TraceSpan) for s in trace.spans)
    assert [s.route for s in trace.spans if s.operation == "chat"] == ["open"] * 3

    # The typed fields are the store's own keys (one added later arrives as an extra field).
    store = reports.open_store(settings)
    assert set(CostReport.model_fields) <= set(reports.cost_review(settings, store, None, "model", workflow_id, None))
    from stakeflow.traces import trace_tree

    assert set(TraceSpan.model_fields) <= set(trace_tree(store, workflow_id)[0])
    # Found by its Temporal run id too, as the CLI finds it.
    handle = await sf.get_handle(workflow_id)
    assert (await sf.get_handle(handle.run_id)).workflow_id == workflow_id
    assert (await sf.costs(run=handle.run_id)).calls == 3


async def test_a_run_started_from_python_is_the_run_the_cli_would_start(client, settings, open_fake, workspace):
    open_fake.script(READ_ONLY)
    sf = await Client.connect(settings)
    async with running_workers(client, settings):
        result = await sf.run("Summarise notes.txt", workspace=workspace, tools=["read_file"], max_steps=3)
        handle = await sf.start("Summarise notes.txt", workspace=workspace, tools=["read_file"], max_steps=3)
        assert handle.ui_url == settings.ui_url(handle.workflow_id)
        assert (await handle.result()).answer == ANSWER
    assert isinstance(result, TaskResult) and result.answer == ANSWER
    assert [(s.route, s.tools) for s in result.steps] == [("open", ["read_file"])]
    info = await handle.status()
    assert (info.status, info.result.answer if info.result else None, info.error) == ("completed", ANSWER, None)

    # The workflow's input is build_request's, the CLI's, for the same options; only the source differs.
    history = await client.get_workflow_handle(handle.workflow_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    sent = TaskRequest.model_validate_json(started.input.payloads[0].data)
    cli = runs.build_request(settings, "Summarise notes.txt", workspace=workspace, tools=["read_file"], max_steps=3)
    assert sent == cli.model_copy(update={"source": "python"})


async def test_approve_reject_and_cancel_through_the_handle(client, settings, open_fake, workspace):
    open_fake.script(WRITES)
    sf = await Client.connect(settings)
    async with running_workers(client, settings):
        approved = await sf.start("Summarise notes.txt into summary.txt", workspace=workspace)
        await waiting(approved, 2)
        assert not (workspace / "summary.txt").exists()
        with pytest.raises(InputError, match="cannot approve step 7"):
            await approved.approve(7)
        edited = [ToolCall(tool="write_file", args={"path": "summary.txt", "content": "edited\n"})]
        record = await approved.approve(2, note="looks right", calls=edited)
        assert (record.decision, record.note, record.by) == ("approved", "looks right", getpass.getuser())
        assert (await approved.result()).steps[1].status == "ok"
        assert (workspace / "summary.txt").read_text() == "edited\n"

        rejected = await sf.start("Summarise notes.txt into summary.txt", workspace=workspace)
        await waiting(rejected, 2)
        record = await (await sf.get_handle(rejected.run_id)).reject(2, "not now", by="reviewer")
        assert (record.decision, record.by) == ("rejected", "reviewer")
        assert (await rejected.result()).steps[1].status == "skipped"

        cancelled = await sf.start("Summarise notes.txt into summary.txt", workspace=workspace)
        await waiting(cancelled, 2)
        await cancelled.cancel()
        with pytest.raises(RunFailed, match=f"run {cancelled.workflow_id} canceled") as failed:
            await cancelled.result()
    assert failed.value.status == "canceled"
    assert (await cancelled.status()).status == "canceled"


async def test_bad_input_is_an_error_naming_the_fix_and_starts_nothing(client, settings, open_fake, workspace):
    sf = await Client.connect(settings)
    refused = {
        "unknown stakes 'hgih': use one of auto, low, high": dict(stakes="hgih"),
        r"max_steps=500 is refused: .*200 \(as `stakeflow run --max-steps`\)": dict(max_steps=500),
        r"budget_tokens=0 is refused: .*\(as `stakeflow run --budget-tokens`\)": dict(budget_tokens=0),
        r"tools='read_file' is refused: .*give a list of tool names": dict(tools="read_file"),
        r"unknown agent 'nobody': add \[agents.nobody\]": dict(agent="nobody"),
        "is not a folder: create it": dict(workspace=workspace / "missing"),
    }
    for message, options in refused.items():
        with pytest.raises(InputError, match=message):
            await sf.start("Summarise notes.txt", **options)
    with pytest.raises(
        InputError, match="the goal is 1,048,576 bytes, over the limit of 262,144: put the text in a file"
    ):
        await sf.run("x" * 1024 * 1024, workspace=workspace)
    with pytest.raises(InputError, match="the goal is empty"):
        await sf.run("   ")
    with pytest.raises(InputError, match="no run 'task-nothing' in namespace default"):
        await sf.get_handle("task-nothing")
    with pytest.raises(InputError, match="is not a duration"):
        await sf.costs(since="7x")
    with pytest.raises(InputError, match="reaches back more than 100 years"):
        await sf.costs(since=timedelta(days=100 * 366))
    with pytest.raises(InputError, match="not a window back in time"):
        await sf.costs(since=timedelta(days=-1))
    with pytest.raises(InputError, match="unknown breakdown 'nope'"):
        await sf.costs(by="nope")
    assert open_fake.calls == []  # nothing ran

    # An id is never reused: an ended run's id is refused, naming how to read that run.
    open_fake.script(READ_ONLY)
    async with running_workers(client, settings):
        done = await sf.start("Summarise notes.txt", workspace=workspace)
        await done.result()
    with pytest.raises(InputError, match=f"workflow id '{done.workflow_id}' belongs to a run that has ended"):
        await sf.start("Summarise notes.txt", workspace=workspace, id=done.workflow_id)

    nowhere = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    with pytest.raises(ServiceError, match="cannot reach Temporal at 127.0.0.1"):
        await Client.connect(nowhere)


async def test_a_run_with_no_worker_to_pick_it_up_says_so(client, settings, workspace, caplog):
    sf = await Client.connect(settings)
    handle = await sf.start("Summarise notes.txt", workspace=workspace)
    await handle.cancel()
    queue = f"{settings.queue_prefix}-workflows"
    assert any(
        f"no worker polls {queue}" in r.getMessage() and "stakeflow up" in r.getMessage() for r in caplog.records
    )


def test_the_client_takes_the_cli_options_by_their_names_and_bounds():
    """`stakeflow run --help`, `costs`, `approve` and `reject`, and the client (and run_agent) share their names."""
    import inspect

    import click

    from stakeflow.cli import runs as cli_runs
    from stakeflow.cli.approvals import approve, reject
    from stakeflow.cli.costs import costs
    from stakeflow.workflow import run_agent

    def flags(command: click.Command, output: set[str]) -> set[str]:
        names = {p.opts[0].lstrip("-").replace("-", "_") for p in command.params if isinstance(p, click.Option)}
        return names - output

    def params(fn) -> set[str]:
        return {n for n, p in inspect.signature(fn).parameters.items() if p.kind == p.KEYWORD_ONLY}

    # Options of `run` that only shape the CLI's output, and options other branches add to both (issue 22's
    # --max-rounds is passed to build_request when given; --strict is how `run` exits; --stream how it prints:
    # a Python caller streams with RunHandle.stream).
    output_only = {"json", "no_wait", "strict", "stream"}
    pending = {"max_rounds"}
    cli_run = flags(cli_runs.run, output_only)
    for fn in (Client.run, Client.start, run_agent):
        assert cli_run <= params(fn), f"{fn.__qualname__} lacks {cli_run - params(fn)}: add them as RunOptions are"
        assert params(fn) <= cli_run | pending, params(fn) - cli_run
    assert set(RunOptions.model_fields) - {"goal", "source"} == params(Client.run) - {"id"}
    assert params(Client.costs) == flags(costs, {"json", "csv"})
    assert {"note", "calls"} <= set(inspect.signature(RunHandle.approve).parameters) and flags(approve, set()) == {
        "note",
        "calls",
    }
    assert flags(reject, set()) == {"note"}

    # The CLI's bounds are the client's.
    [max_steps] = [p for p in cli_runs.run.params if p.name == "max_steps"]
    [budget] = [p for p in cli_runs.run.params if p.name == "budget_tokens"]
    assert (max_steps.type.min, max_steps.type.max) == (1, 200)
    with pytest.raises(InputError):
        RunOptions.checked("g", max_steps=201)
    assert RunOptions.checked("g", max_steps=200).max_steps == 200
    assert budget.type.min == 1


def test_import_stakeflow_stays_cheap_and_loads_the_client_when_asked():
    probe = (
        "import sys, stakeflow; cheap = 'temporalio' not in sys.modules; "
        "from stakeflow import Client, RunHandle; import stakeflow.client as c; "
        "assert Client is c.Client and RunHandle is c.RunHandle; "
        "print(cheap, 'temporalio' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.stdout.split() == ["True", "True"], out.stderr
    with pytest.raises(AttributeError, match="no attribute 'Clinet'"):
        import stakeflow

        stakeflow.Clinet  # noqa: B018


async def test_settle_waits_for_an_ended_runs_last_calls_and_no_longer_than_its_bound(tmp_path):
    """The wait behind `trace` and `costs --run`: a worker that died before exporting costs ``wait_s``, no more; a
    run still going (no run span yet) is not waited for."""
    import time

    from stakeflow.core import semconv as sc
    from stakeflow.traces import TraceStore
    from tests.trace_spans import chat_attributes, provider

    path = tmp_path / "traces.duckdb"
    tracer = provider(path).get_tracer("test")
    with (
        tracer.start_as_current_span(sc.SPAN_RUN, attributes={sc.RUN_ID: "run-x", sc.MODEL_CALLS: 2}),
        tracer.start_as_current_span("chat m", attributes=chat_attributes("run-x", 1, "open", "m")),
    ):
        pass
    store = TraceStore(path)
    assert reports.missing_calls(store, "run-x") == 1 and reports.missing_calls(store, "running") == 0
    started = time.monotonic()
    await reports.settle(store, "run-x", wait_s=0.5)
    assert 0.5 <= time.monotonic() - started < 3
    started = time.monotonic()
    await reports.settle(store, "running", wait_s=30)
    assert time.monotonic() - started < 1
    with tracer.start_as_current_span("chat m", attributes=chat_attributes("run-x", 2, "open", "m")):
        pass
    started = time.monotonic()
    await reports.settle(store, "run-x", wait_s=30)
    assert reports.missing_calls(store, "run-x") == 0 and time.monotonic() - started < 1
