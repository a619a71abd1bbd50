"""Agents inside a team's own workflows (``stakeflow.workflow.run_agent``), on the suite's dev server: the team's
workflow in its own module (tests/team_agent.py, and the README's example, run as written), on its own task queue,
its worker built from stakeflow's client; stakeflow's workers in-process; the scripted open model.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import subprocess
import sys
import uuid

import pytest
from temporalio import activity
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowFailureError, WorkflowHistory
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import Replayer, Worker

from stakeflow import Client
from stakeflow.agents.types import TaskRequest
from stakeflow.client import plugin
from stakeflow.core.contracts import AGENT_WORKFLOW, PREPARE_RUN
from stakeflow.temporal.plugin import StakeflowPlugin
from stakeflow.workflows.agent_task import AgentTaskWorkflow
from tests.agent_script import agent, plan
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer
from tests.support import REPO, make_settings, open_endpoint_env, open_settings, running_workers, worker_env
from tests.team_agent import TeamTicketWorkflow, Ticket
from tests.test_client import ANSWER, READ_ONLY, WRITES, ended_cleanly, readme_python, waiting

SECRET = "sk-ant-team-SECRET-41c7e2"
# tests/team_agent.py's histories as recorded on earlier commits (run the approval test below with the history
# written out to record one); each replays on today's run_agent.
TEAM_HISTORIES = sorted((REPO / "tests" / "histories" / "team").glob("*/*.json"))


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


def team_queue() -> str:
    return f"team-{uuid.uuid4().hex[:8]}"


async def children(temporal: TemporalClient, workflow_id: str) -> list[str]:
    """The workflow ids of the children a workflow started, from its history."""
    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    return [
        e.child_workflow_execution_started_event_attributes.workflow_execution.workflow_id
        for e in history.events
        if e.HasField("child_workflow_execution_started_event_attributes")
    ]


async def replays(history, workflow: type, settings) -> None:
    result = await Replayer(workflows=[workflow], plugins=[plugin(settings)]).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert result.replay_failure is None, result.replay_failure


async def test_the_readme_workflow_example_runs_as_written(client, tmp_path, open_fake, settings, monkeypatch):
    """The README's two modules, as files of a package of the team's, run as `python -m my_team.worker`."""
    workflows_py, worker_py = readme_python("### Inside your own workflows")
    package = tmp_path / "team" / "my_team"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "workflows.py").write_text(workflows_py)
    (package / "worker.py").write_text(worker_py)
    open_fake.script(READ_ONLY)
    env = worker_env(
        settings.home,
        client,
        settings.queue_prefix,
        **open_endpoint_env(open_fake.url),
        PYTHONPATH=str(tmp_path / "team"),
    )
    async with running_workers(client, settings):
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "my_team.worker"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    ended_cleanly(out)
    # Its last line is the reply (Temporal's core may log a warning to stdout before it on a loaded machine).
    assert out.stdout.splitlines()[-1] == f"Thanks for writing in. {ANSWER}", out.stdout

    # The agent's run is a child of the team's workflow, on stakeflow's queue, with the CLI's request.
    [child] = await children(client, "ticket-1042")
    desc = await client.get_workflow_handle(child).describe()
    assert (desc.parent_id, desc.workflow_type, desc.task_queue) == (
        "ticket-1042",
        AGENT_WORKFLOW,
        f"{settings.queue_prefix}-workflows",
    )
    assert child.startswith("ticket-1042-agent-") and len(child) == len("ticket-1042-agent-") + 8
    assert await desc.static_summary() == "Answer from the file notes.txt: How much did revenue grow?"
    child_history = await client.get_workflow_handle(child).fetch_history()
    started = child_history.events[0].workflow_execution_started_event_attributes
    req = TaskRequest.model_validate_json(started.input.payloads[0].data)
    assert (req.source, req.workspace, req.tools) == (
        "workflow:TicketWorkflow",
        str((REPO / "examples" / "workspace").resolve()),
        ["read_file"],
    )

    # Both histories replay: the team's workflow on the README's own module, the run on stakeflow's.
    monkeypatch.syspath_prepend(str(tmp_path / "team"))
    ticket_workflow = importlib.import_module("my_team.workflows").TicketWorkflow
    await replays(await client.get_workflow_handle("ticket-1042").fetch_history(), ticket_workflow, settings)
    await replays(child_history, AgentTaskWorkflow, settings)


async def test_an_agent_step_waits_for_approval_and_the_team_uses_its_answer(client, tmp_path, open_fake, workspace):
    """Routed as any run (the write on the frontier), approved as any run's step, its key in no history."""
    with FakeAnthropicServer() as frontier_fake:
        frontier_fake.script(WRITES)
        open_fake.script(WRITES)
        settings = make_settings(
            tmp_path,
            temporal_address=client.service_client.config.target_host,
            open_base_url=open_fake.url,
            open_model="qwen-test",
            open_dialect="vllm",
            anthropic_api_key=SECRET,
            anthropic_base_url=frontier_fake.url,
            frontier_model="claude-test",
        )
        sf = await Client.connect(settings)
        queue = team_queue()
        ticket = Ticket(
            id="T-7",
            question="Summarise notes.txt into summary.txt",
            workspace=str(workspace),
            tools=["read_file", "write_file"],
            agent_run_id=f"{queue}-summary",
        )
        async with (
            running_workers(client, settings),
            Worker(sf.temporal, task_queue=queue, workflows=[TeamTicketWorkflow]),
        ):
            parent = await sf.temporal.start_workflow(TeamTicketWorkflow.run, ticket, id=queue, task_queue=queue)
            child = await _started(sf, ticket.agent_run_id)
            await waiting(child, 2)  # decided as any run's step is, by the run's id
            await child.approve(2, note="fine")
            reply = await parent.result()
    assert reply == "ticket T-7: Wrote summary.txt [steps: 1 open, 2 frontier]"
    assert (workspace / "summary.txt").read_text() == "grew 12%\n"
    assert (await sf.temporal.get_workflow_handle(child.workflow_id).describe()).parent_id == queue
    result = await child.result()
    assert (result.steps[1].approval.decision, result.steps[1].approval.note) == ("approved", "fine")
    parent_history = await parent.fetch_history()
    child_history = await sf.temporal.get_workflow_handle(child.workflow_id).fetch_history()
    assert SECRET not in parent_history.to_json() and SECRET not in child_history.to_json()
    await replays(parent_history, TeamTicketWorkflow, settings)


@pytest.mark.parametrize("path", TEAM_HISTORIES, ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_a_recorded_team_history_replays_on_this_code(path, tmp_path):
    """A team's workflow calling run_agent, recorded on an earlier commit: run_agent runs inside the team's workflows,
    so a change to the commands it issues would break their runs in flight after an upgrade (docs/versioning.md)."""
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await replays(history, TeamTicketWorkflow, make_settings(tmp_path))


async def _started(sf: Client, workflow_id: str):
    """The run's handle once the team's workflow has started it (30 s at most)."""
    for _ in range(300):
        try:
            return await sf.get_handle(workflow_id)
        except Exception:
            await asyncio.sleep(0.1)
    pytest.fail(f"{workflow_id} never started")


async def test_a_request_the_cli_would_refuse_fails_the_team_workflow_at_once(client, settings, workspace):
    """No retry loop and no hang: the failure names the fix; nothing is started. A goal over the bound never
    enters the team's history again (the input holds it once)."""
    sf = await Client.connect(settings)
    queue = team_queue()
    big = "How much did revenue grow? " + "x" * 1024 * 1024
    cases = {
        "unknown stakes 'hgih': use one of auto, low, high": Ticket(
            "T-1", "Summarise notes.txt", str(workspace), stakes="hgih"
        ),
        "unknown tool 'nope'": Ticket("T-2", "Summarise notes.txt", str(workspace), tools=["nope"]),
        r"max_steps=500 is refused: .*\(as `stakeflow run --max-steps`\)": Ticket(
            "T-3", "Summarise notes.txt", str(workspace), max_steps=500
        ),
        "over the limit of 262,144: put the text in a file": Ticket("T-4", big, str(workspace)),
        "is not a folder: create it": Ticket("T-5", "Summarise notes.txt", str(workspace / "missing")),
    }
    async with Worker(sf.temporal, task_queue=queue, workflows=[TeamTicketWorkflow]):
        for n, (message, ticket) in enumerate(cases.items()):
            handle = await sf.temporal.start_workflow(
                TeamTicketWorkflow.run, ticket, id=f"{queue}-{n}", task_queue=queue
            )
            with pytest.raises(WorkflowFailureError) as failed:
                await asyncio.wait_for(handle.result(), 60)
            cause = failed.value.cause
            assert isinstance(cause, ApplicationError) and cause.type == "TaskInvalid", cause
            assert cause.message.startswith("run_agent: ") and re.search(message, cause.message), cause
            history = await handle.fetch_history()
            assert await children(sf.temporal, handle.id) == []
            attempts = [e for e in history.events if e.HasField("activity_task_started_event_attributes")]
            assert [e.activity_task_started_event_attributes.attempt for e in attempts] in ([], [1])
            if ticket is cases[list(cases)[3]]:
                assert attempts == [] and sum(e.ByteSize() for e in history.events) < 1.1 * len(big)


@activity.defn(name="team_lookup")
async def team_lookup(text: str) -> str:
    return text


async def test_a_team_worker_without_the_activity_is_told_how_to_build_it(client, settings, workspace):
    """A Temporal client given stakeflow's plain plugin: the team's worker has activities, none of them stakeflow's."""
    team = TemporalClient(client.service_client, namespace=client.namespace, plugins=[StakeflowPlugin(settings)])
    queue = team_queue()
    ticket = Ticket("T-8", "Summarise notes.txt", str(workspace))
    async with Worker(team, task_queue=queue, workflows=[TeamTicketWorkflow], activities=[team_lookup]):
        handle = await team.start_workflow(TeamTicketWorkflow.run, ticket, id=queue, task_queue=queue)
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), 60)
    message = failed.value.cause.message
    assert f"the worker of task queue {queue} has no {PREPARE_RUN} activity" in message
    assert "stakeflow.Client.connect()).temporal" in message and "stakeflow.client.plugin(settings)" in message


async def test_a_run_that_fails_raises_in_the_team_workflow_and_budgets_hold(client, settings, open_fake, workspace):
    open_fake.script(agent(plan(("a", None), ("b", None)), {}, answer="never"))
    sf = await Client.connect(settings)
    queue = team_queue()
    ticket = Ticket("T-9", "Two steps", str(workspace), tools=[], budget_tokens=1)
    async with (
        running_workers(client, settings),
        Worker(sf.temporal, task_queue=queue, workflows=[TeamTicketWorkflow]),
    ):
        reply = await sf.temporal.execute_workflow(TeamTicketWorkflow.run, ticket, id=queue, task_queue=queue)
    assert reply.startswith("ticket T-9: handed to a person (token budget exceeded after plan")
    [child] = await children(sf.temporal, queue)
    assert (await (await sf.get_handle(child)).status()).status == "failed"


async def test_cancelling_the_team_workflow_cancels_its_agent(client, settings, open_fake, workspace):
    open_fake.script(WRITES)
    sf = await Client.connect(settings)
    queue = team_queue()
    ticket = Ticket(
        "T-10",
        "Summarise notes.txt into summary.txt",
        str(workspace),
        ["read_file", "write_file"],
        agent_run_id=queue + "-a",
    )
    async with (
        running_workers(client, settings),
        Worker(sf.temporal, task_queue=queue, workflows=[TeamTicketWorkflow]),
    ):
        parent = await sf.temporal.start_workflow(TeamTicketWorkflow.run, ticket, id=queue, task_queue=queue)
        child = await _started(sf, ticket.agent_run_id)
        await waiting(child, 2)
        await parent.cancel()
        with pytest.raises(WorkflowFailureError) as failed:  # not the team's "handed to a person" reply
            await parent.result()
        assert isinstance(failed.value.cause, CancelledError)
        for _ in range(100):
            if (await child.status()).status != "running":
                break
            await asyncio.sleep(0.1)
    assert (await child.status()).status == "canceled"
    assert not (workspace / "summary.txt").exists()
    await replays(await parent.fetch_history(), TeamTicketWorkflow, settings)
