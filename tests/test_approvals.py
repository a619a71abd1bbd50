"""Human approval of high-risk steps, search attributes and summaries, on the real dev server."""

from __future__ import annotations

import asyncio
import getpass
import json
import shutil
import subprocess

import pytest
from click.testing import CliRunner
from temporalio.client import WorkflowFailureError

from stakeflow.agents.types import Progress
from stakeflow.cli import cli
from stakeflow.core.contracts import PROGRESS_QUERY
from stakeflow.services import runs
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer
from tests.support import make_settings, open_endpoint_env, running_workers

WRITE_PLAN = plan(("Read the notes", "read_file"), ("Write the summary", "write_file"))


@pytest.fixture
def open_fake():
    with FakeOpenAIServer(model="qwen-test") as server:
        server.script(
            agent(
                WRITE_PLAN,
                {
                    1: call("read_file", path="notes.txt"),
                    2: call("write_file", path="summary.txt", content="grew 12%\n"),
                },
                answer="done",
            )
        )
        yield server


@pytest.fixture
def setup(tmp_path, open_fake, client, monkeypatch):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("Revenue grew 12%.\n")
    monkeypatch.setenv("STAKEFLOW_TEMPORAL_ADDRESS", client.service_client.config.target_host)
    settings = make_settings(tmp_path, open_base_url=open_fake.url, open_model="qwen-test", open_dialect="vllm")
    return settings, ws


async def wait_for_approval(handle, step: int) -> Progress:
    for _ in range(300):
        p = await handle.query(PROGRESS_QUERY, result_type=Progress)
        if step in p.awaiting_approval:
            return p
        await asyncio.sleep(0.1)
    pytest.fail(f"step {step} never waited for approval")


def cli_run(*args: str):
    out = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return out.exit_code, out.output


async def start(client, settings, ws, **kw):
    req = runs.build_request(settings, "Summarise notes.txt into summary.txt", workspace=ws, **kw)
    return await runs.start_run(client, settings, req)


async def test_high_risk_step_waits_then_approve_via_cli(client, setup):
    settings, ws = setup
    async with running_workers(client, settings):
        handle = await start(client, settings, ws)
        p = await wait_for_approval(handle, 2)
        assert p.steps[1].status == "awaiting_approval"
        assert not (ws / "summary.txt").exists()  # nothing acted yet
        code, out = await asyncio.to_thread(
            cli_run, "list", "--json", "--query", f"StakeflowAwaitingApproval = true AND WorkflowId = '{handle.id}'"
        )
        assert code == 0 and [r["workflow_id"] for r in json.loads(out)] == [handle.id]

        # Wrong step, then a valid approval, then a second one.
        code, out = await asyncio.to_thread(cli_run, "approve", handle.id, "9")
        assert code == 1 and "step 9 is not waiting for approval (steps waiting: 2)" in out
        code, out = await asyncio.to_thread(cli_run, "approve", handle.id, "2", "--note", "looks right")
        assert code == 0, out
        assert f"step 2 of {handle.id} approved by {getpass.getuser()}: looks right" in out
        code, out = await asyncio.to_thread(cli_run, "approve", handle.id, "2")
        assert code == 1 and "already approved" in out

        result = await handle.result()
    assert (ws / "summary.txt").read_text() == "grew 12%\n"
    approval = result.steps[1].approval
    assert (approval.decision, approval.note, approval.by) == ("approved", "looks right", getpass.getuser())
    assert "write_file(path='summary.txt'" in approval.waiting_for
    assert result.steps[1].status == "ok"

    # Search attributes and summaries, as the Web UI and `temporal workflow describe` see them.
    query = f"StakeflowStakes = 'high' AND StakeflowCostUsd >= 0 AND WorkflowId = '{handle.id}'"
    for _ in range(50):  # visibility is eventually consistent: the close lands a moment after the result
        code, out = await asyncio.to_thread(cli_run, "list", "--json", "--query", query)
        [row] = json.loads(out)
        if row["status"] == "completed":
            break
        await asyncio.sleep(0.1)
    assert (row["stakes"], row["open_steps"], row["awaiting_approval"], row["status"]) == (
        "high",
        2,
        False,
        "completed",
    )
    described = subprocess.run(
        [
            shutil.which("temporal"),
            "workflow",
            "describe",
            "--address",
            client.service_client.config.target_host,
            "--workflow-id",
            handle.id,
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert described.returncode == 0, described.stderr
    text = described.stdout
    assert "Summarise notes.txt into summary.txt" in text  # static summary
    assert "StakeflowStakes" in text


async def test_reject_skips_the_step_and_the_run_goes_on(client, setup):
    settings, ws = setup
    async with running_workers(client, settings):
        handle = await start(client, settings, ws)
        await wait_for_approval(handle, 2)
        code, out = await asyncio.to_thread(cli_run, "reject", handle.id, "2")
        assert code == 2 and "--note" in out  # a rejection says why
        code, out = await asyncio.to_thread(cli_run, "reject", handle.id, "2", "--note", "wrong file")
        assert code == 0, out
        result = await handle.result()
    assert not (ws / "summary.txt").exists()
    step = result.steps[1]
    assert (step.status, step.approval.decision, step.approval.note) == ("skipped", "rejected", "wrong file")
    assert step.tool_results == []
    assert result.answer == "done"


async def test_approval_timeout_rejects(client, setup, monkeypatch):
    settings, ws = setup
    settings.approvals.timeout_s = 1
    async with running_workers(client, settings):
        handle = await start(client, settings, ws)
        result = await handle.result()
    assert result.steps[1].approval.decision == "timed_out"
    assert result.steps[1].status == "skipped"
    assert not (ws / "summary.txt").exists()


async def test_auto_approve_is_recorded(client, setup):
    settings, ws = setup
    async with running_workers(client, settings):
        handle = await start(client, settings, ws, auto_approve=True)
        result = await handle.result()
    assert result.steps[1].approval.decision == "auto_approved"
    assert (ws / "summary.txt").exists()


async def test_cancel_while_waiting_ends_cleanly(client, setup):
    settings, ws = setup
    async with running_workers(client, settings):
        handle = await start(client, settings, ws)
        await wait_for_approval(handle, 2)
        code, _ = await asyncio.to_thread(cli_run, "cancel", handle.id)
        assert code == 0
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        info = await runs.describe_run(client, handle.id, with_progress=False)
    assert info.status == "canceled"
    assert not (ws / "summary.txt").exists()


async def test_a_step_cancelled_while_waiting_counts_nowhere(client, tmp_path, open_fake):
    """One count for every view: the run span (and so the `runs` view) and the search attributes agree that
    a high-stakes step cancelled while it waited for approval never ran (they used to disagree)."""
    import signal as signals
    import uuid

    from stakeflow.core.contracts import KEYS
    from stakeflow.traces import TraceStore
    from tests.support import spawn_worker, worker_env

    home = tmp_path / "home"
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("Revenue grew 12%.\n")
    prefix = f"t{uuid.uuid4().hex[:8]}"
    env = worker_env(
        home,
        client,
        prefix,
        **open_endpoint_env(open_fake.url),
    )
    worker = spawn_worker(env)
    try:
        settings = make_settings(tmp_path, queue_prefix=prefix, open_base_url=open_fake.url, open_model="qwen-test")
        handle = await start(client, settings, ws, stakes="high")
        await wait_for_approval(handle, 2)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    finally:
        worker.send_signal(signals.SIGTERM)
        worker.wait(60)
    attrs = (await handle.describe()).typed_search_attributes
    with TraceStore(home / "traces.duckdb").reader() as con:
        row = con.execute(
            "SELECT status, stakes, open_steps, frontier_steps FROM runs WHERE run_id = ?", [handle.id]
        ).fetchone()
    # Step 1 (read_file) ran on the open model (high by --stakes, frontier not configured); step 2 never acted.
    assert row == (
        "canceled",
        attrs.get(KEYS["stakes"]),
        attrs.get(KEYS["open_steps"]),
        attrs.get(KEYS["frontier_steps"]),
    )
    assert (row[2], row[3]) == (1, 0)


async def test_an_approval_that_arrives_with_the_timeout_wins(client, setup):
    """The approver was told "approved", so the step acts: the first decision wins over the timer.

    Deterministic: with no worker running, the approval timer fires and the approval is sent; the next
    worker gets both in one workflow task, the race the review described. (temporalio 1.35 applies updates
    before timers within an activation, so the old code survived this ordering too; the rule is now explicit
    in workflows/approvals.py rather than an accident of job order.)"""
    from temporalio.client import WorkflowUpdateStage

    from stakeflow.agents.types import ApprovalRecord, ApprovalRequest
    from stakeflow.core.contracts import APPROVE_UPDATE

    settings, ws = setup
    settings.approvals.timeout_s = 2
    async with running_workers(client, settings):
        handle = await start(client, settings, ws)
        await wait_for_approval(handle, 2)
    await asyncio.sleep(3)  # the approval timer fires while no worker runs
    request = ApprovalRequest(step=2, decision="approve", note="just in time", by="tester")
    update = asyncio.create_task(
        handle.start_update(
            APPROVE_UPDATE, request, result_type=ApprovalRecord, wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
    )
    await asyncio.sleep(0.5)
    async with running_workers(client, settings):
        record = await (await update).result()
        result = await handle.result()
    assert record.decision == "approved"
    # Both in one workflow task: the timer fired, then the update was accepted, before anything else ran.
    from temporalio.api.enums.v1 import EventType

    history = await handle.fetch_history()
    kinds = [e.event_type for e in history.events]
    fired = kinds.index(EventType.EVENT_TYPE_TIMER_FIRED)
    # A failed workflow task (a nondeterminism on the new worker's replay) is named with its cause and the history.
    failed = [
        f"event {e.event_id}: {e.workflow_task_failed_event_attributes.failure.message}"
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]
    assert kinds[fired + 1 : fired + 5] == [
        EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    ], f"{failed}\n{history.to_json()}"
    step = result.steps[1]
    assert (step.approval.decision, step.approval.note, step.status) == ("approved", "just in time", "ok")
    assert (ws / "summary.txt").read_text() == "grew 12%\n"
