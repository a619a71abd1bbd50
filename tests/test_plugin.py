"""StakeflowPlugin: a team's own client and worker get stakeflow's converter, codec, tracing and sandbox by passing it,
and stakeflow's workers get each queue role's workflows and activities from the holders that list them."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from temporalio.client import Client
from temporalio.worker import Replayer, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from stakeflow.core.contracts import queue_name
from stakeflow.temporal.codec import ENCODING
from stakeflow.temporal.plugin import StakeflowPlugin
from stakeflow.temporal.sandbox import PASSED_THROUGH
from stakeflow.workers.main import WORKFLOWS, Holders, build_workers
from tests.support import REPO, make_settings
from tests.team_worker import TeamWorkflow, team_echo
from tests.test_codec import KEYS_ENV


def _names(config) -> set[str]:
    return {getattr(fn, "__temporal_activity_definition").name for fn in config.get("activities", [])}


async def test_a_teams_own_worker_gets_the_converter_codec_and_sandbox_and_nothing_else(client, tmp_path):
    """In this process no tracer provider is installed: the plugin leaves tracing out rather than fail the worker
    (the test below runs a traced one in a process of its own)."""
    settings = make_settings(tmp_path, codec_keys=KEYS_ENV)
    team = Client(client.service_client, namespace=client.namespace, plugins=[StakeflowPlugin(settings)])
    queue = f"team-{uuid.uuid4().hex[:8]}"
    worker = Worker(team, task_queue=queue, workflows=[TeamWorkflow], activities=[team_echo])
    config = worker.config(active_config=True)
    assert _names(config) == {"team_echo"} and config["workflows"] == [TeamWorkflow]  # none of stakeflow's
    runner = config["workflow_runner"]
    assert isinstance(runner, SandboxedWorkflowRunner)
    assert set(PASSED_THROUGH) <= set(runner.restrictions.passthrough_modules)

    async with worker:
        handle = await team.start_workflow(TeamWorkflow.run, "hello", id=queue, task_queue=queue)
        assert (await handle.result()).startswith("hello ")

    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    assert started.input.payloads[0].metadata["encoding"] == ENCODING  # the server holds ciphertext
    replayed = await Replayer(workflows=[TeamWorkflow], plugins=[StakeflowPlugin(settings)]).replay_workflow(history)
    assert replayed.replay_failure is None  # the plugin's converter decodes what its client wrote


def test_a_teams_own_worker_process_is_traced_from_its_client_to_its_activity(client, tmp_path):
    """One trace from the span the client starts the run in, through the workflow, to the activity."""
    address = client.service_client.config.target_host
    out = subprocess.run(
        [sys.executable, "-m", "tests.team_worker", address, str(tmp_path / "home")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["answer"] == f"hello {seen['trace_id']}" and int(seen["trace_id"], 16) != 0


async def test_each_queue_gets_the_workflows_and_activities_its_role_serves(client, tmp_path):
    settings = make_settings(
        tmp_path, mcp={"git": {"command": "mcp-server-git", "task_queue": f"gitbox-{uuid.uuid4().hex[:6]}"}}
    )
    holders = Holders(settings)
    try:
        workers = build_workers(client, settings, ("workflows", "open", "frontier", "tools", "train"), holders)
        configs = {w.task_queue: w.config(active_config=True) for w in workers}
    finally:
        await holders.close()
    prefix = settings.queue_prefix
    git_queue = settings.mcp["git"].task_queue
    assert set(configs) == {queue_name(r, prefix) for r in ("workflows", "open", "frontier", "tools", "train")} | {
        git_queue
    }
    workflows = configs[queue_name("workflows", prefix)]
    assert workflows["workflows"] == list(WORKFLOWS)
    assert _names(workflows) == {
        "run_tool",  # fast read-only tools as local activities
        "reserve_shadow_budget",
        "settle_shadow_budget",
        "record_eval",
        "read_agreement",
        "record_label",
        "load_replay_examples",
        "check_answer",  # the answer against what the run observed (issue 22), a local activity
        "export_dataset",
        "promote_adapter",
    }
    assert _names(configs[queue_name("open", prefix)]) == {"call_model", "load_adapter", "unload_adapter"}
    assert _names(configs[queue_name("frontier", prefix)]) == {"call_model"}
    assert _names(configs[queue_name("train", prefix)]) == {"train_adapter"}
    assert _names(configs[queue_name("tools", prefix)]) == _names(configs[git_queue]) == {"run_tool", "describe_tools"}
    assert all(not c.get("workflows") for q, c in configs.items() if q != queue_name("workflows", prefix))


async def test_stakeflows_clients_carry_the_plugin(client, tmp_path):
    from stakeflow.temporal.connection import connect

    settings = make_settings(tmp_path, temporal_address=client.service_client.config.target_host)
    connected = await connect(settings)
    assert [type(p) for p in connected.config()["plugins"]] == [StakeflowPlugin]
