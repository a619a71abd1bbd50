"""[workers] reaches the Temporal Workers: per-queue slots and pollers, the sandbox passthrough, local model calls."""

from __future__ import annotations

import pytest
from temporalio.worker import PollerBehaviorSimpleMaximum, UnsandboxedWorkflowRunner

from stakeflow.config import load_settings
from stakeflow.core.contracts import CALL_MODEL, queue_name
from stakeflow.core.errors import ConfigError
from stakeflow.temporal.sandbox import PASSED_THROUGH, ContextFreeSandbox
from stakeflow.workers.main import Holders, build_workers
from tests.support import make_settings, running_workers


def _by_queue(client, settings):
    workers = build_workers(client, settings, ("workflows", "open", "frontier", "tools"), Holders(settings))
    return {w.task_queue: w.config(active_config=True) for w in workers}


def _activity_names(config) -> set[str]:
    return {getattr(fn, "__temporal_activity_definition").name for fn in config.get("activities", [])}


async def test_queue_limits_reach_each_worker_and_unset_ones_keep_temporals_defaults(client, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text(
        "[workers.open]\nmax_concurrent_activities = 256\nactivity_pollers = 12\n"
        "[workers.workflows]\nmax_concurrent_workflow_tasks = 300\nmax_concurrent_local_activities = 400\n"
        "workflow_pollers = 8\nmax_cached_workflows = 2000\n"
    )
    monkeypatch.setenv("STAKEFLOW_HOME", str(home))
    settings = load_settings().model_copy(update={"queue_prefix": make_settings(tmp_path).queue_prefix})
    configs = _by_queue(client, settings)
    prefix = settings.queue_prefix

    open_cfg = configs[queue_name("open", prefix)]
    assert open_cfg["max_concurrent_activities"] == 256
    assert open_cfg["activity_task_poller_behavior"] == PollerBehaviorSimpleMaximum(maximum=12)
    wf = configs[queue_name("workflows", prefix)]
    assert (wf["max_concurrent_workflow_tasks"], wf["max_concurrent_local_activities"], wf["max_cached_workflows"]) == (
        300,
        400,
        2000,
    )
    assert wf["workflow_task_poller_behavior"] == PollerBehaviorSimpleMaximum(maximum=8)
    frontier = configs[queue_name("frontier", prefix)]
    assert frontier.get("max_concurrent_activities") is None  # Temporal's default
    assert frontier["activity_task_poller_behavior"] == PollerBehaviorSimpleMaximum(maximum=5)


async def test_the_workflows_worker_passes_stakeflows_pure_modules_through_its_sandbox(client, tmp_path):
    settings = make_settings(tmp_path)
    wf = _by_queue(client, settings)[queue_name("workflows", settings.queue_prefix)]
    runner = wf["workflow_runner"]
    assert isinstance(runner, ContextFreeSandbox)  # stakeflow's converter: tests/test_sandbox.py
    assert set(PASSED_THROUGH) <= set(runner.restrictions.passthrough_modules)
    off = make_settings(tmp_path, workers={"workflow_sandbox": False})
    unsandboxed = _by_queue(client, off)[queue_name("workflows", off.queue_prefix)]["workflow_runner"]
    assert isinstance(unsandboxed, UnsandboxedWorkflowRunner)


async def test_local_model_calls_register_call_model_on_the_workflows_worker_only_when_set(client, tmp_path):
    off = make_settings(tmp_path)
    assert CALL_MODEL not in _activity_names(_by_queue(client, off)[queue_name("workflows", off.queue_prefix)])
    on = make_settings(tmp_path, workers={"local_model_calls": True})
    configs = _by_queue(client, on)
    assert CALL_MODEL in _activity_names(configs[queue_name("workflows", on.queue_prefix)])
    assert CALL_MODEL in _activity_names(configs[queue_name("open", on.queue_prefix)])  # the open queue still serves


def test_a_bad_limit_names_the_setting(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text("[workers.workflows]\nworkflow_pollers = 1\n")
    monkeypatch.setenv("STAKEFLOW_HOME", str(home))
    with pytest.raises(ConfigError, match="workers.workflows.workflow_pollers"):
        load_settings()


async def test_a_run_completes_unsandboxed_and_replays_under_the_strict_sandbox(client, tmp_path):
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.worker import Replayer

    from stakeflow.services import runs
    from stakeflow.workflows.agent_task import AgentTaskWorkflow
    from tests.agent_script import agent, call, plan
    from tests.fakes import FakeOpenAIServer

    ws = tmp_path / "ws"
    ws.mkdir()
    with FakeOpenAIServer(model="qwen-test") as fake:
        fake.script(agent(plan(("Compute", "calculator")), {1: call("calculator", expression="6*7")}, answer="42"))
        settings = make_settings(
            tmp_path,
            open_base_url=fake.url,
            open_model="qwen-test",
            open_dialect="vllm",
            workers={"workflow_sandbox": False},
        )
        async with running_workers(client, settings):
            handle = await runs.start_run(client, settings, runs.build_request(settings, "What is 6*7?", workspace=ws))
            result = await handle.result()
            history = await handle.fetch_history()
    assert result.status == "completed" and result.answer == "42"
    # The default Replayer is Temporal's strict sandbox: what ran unsandboxed is still checked there.
    replayed = await Replayer(workflows=[AgentTaskWorkflow], data_converter=pydantic_data_converter).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert replayed.replay_failure is None
