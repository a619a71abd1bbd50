"""[workers] local_model_calls: open-model calls as local activities, recorded per run, same outcomes as before."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from stakeflow.config import WorkersConfig
from stakeflow.services import runs
from stakeflow.workflows.agent_task import AgentTaskWorkflow
from tests.agent_script import agent, call, plan
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, Reply
from tests.support import (
    free_port,
    make_settings,
    open_endpoint_env,
    running_workers,
    spawn_worker,
    worker_env,
    worker_log,
)
from tests.workflow_support import open_down_settings

SECRET_KEY = "sk-ant-test-LOCAL-5a4b3c"
LOCAL = WorkersConfig(local_model_calls=True)


def _kinds(history) -> list[str]:
    """Each activity scheduled on a queue as "activity", each local activity as "marker" (not patch markers)."""
    kinds = []
    for e in history.events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            kinds.append("activity")
        elif (
            e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
            and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
        ):
            kinds.append("marker")
    return kinds


def _calls(history) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


@pytest.fixture
def workspace(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


async def test_open_calls_run_as_local_activities_and_the_history_replays(client, tmp_path, workspace):
    with FakeOpenAIServer(model="qwen-test") as fake:
        fake.script(agent(plan(("Compute", "calculator")), {1: call("calculator", expression="6*7")}, answer="42"))
        settings = make_settings(
            tmp_path, open_base_url=fake.url, open_model="qwen-test", open_dialect="vllm", workers=LOCAL
        )
        req = runs.build_request(settings, "What is 6*7?", workspace=workspace)
        assert req.routing.open_local is True
        async with running_workers(client, settings):
            handle = await runs.start_run(client, settings, req)
            result = await handle.result()
            history = await handle.fetch_history()
    assert result.status == "completed" and result.answer == "42"
    assert [s.status for s in result.steps] == ["ok"] and result.steps[0].tool_results[0].output == "6*7 = 42"
    assert _calls(history) == []  # no call_model (nor run_tool) on a task queue
    assert _kinds(history).count("marker") == 5  # plan, step, the calculator, answer, the answer check
    assert len(fake.calls) == 3
    replayed = await Replayer(workflows=[AgentTaskWorkflow], data_converter=pydantic_data_converter).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert replayed.replay_failure is None


async def test_without_the_setting_a_run_keeps_regular_activities_on_the_open_queue(client, tmp_path, workspace):
    with FakeOpenAIServer(model="qwen-test") as fake:
        fake.script(agent(plan(("Compute", "calculator")), {1: call("calculator", expression="6*7")}, answer="42"))
        # The worker could run them locally; the run did not ask (it started without the setting).
        worker_settings = make_settings(
            tmp_path, open_base_url=fake.url, open_model="qwen-test", open_dialect="vllm", workers=LOCAL
        )
        starter = worker_settings.model_copy(update={"workers": WorkersConfig()})
        async with running_workers(client, worker_settings):
            handle = await runs.start_run(
                client, starter, runs.build_request(starter, "What is 6*7?", workspace=workspace)
            )
            assert (await handle.result()).answer == "42"
            history = await handle.fetch_history()
    assert _calls(history) == ["call_model"] * 3


async def test_a_local_open_call_that_keeps_failing_falls_back_to_the_frontier(client, tmp_path, workspace):
    with FakeAnthropicServer() as frontier:
        frontier.script(agent(plan(("Compute", "calculator")), {1: call("calculator", expression="6*7")}, answer="42"))
        settings = open_down_settings(
            tmp_path, frontier, anthropic_api_key=SECRET_KEY, frontier_model="claude-test", workers=LOCAL
        )
        async with running_workers(client, settings):
            handle = await runs.start_run(
                client, settings, runs.build_request(settings, "What is 6*7?", workspace=workspace)
            )
            result = await handle.result()
            history = await handle.fetch_history()
    [step] = result.steps
    assert (step.route, step.fallback, step.status) == ("frontier", True, "ok")
    assert step.attempts[0].startswith("open: cannot reach the open model")
    assert step.reason.endswith("fallback: open model endpoint unavailable")
    assert _calls(history) == ["call_model"] * 3  # the fallbacks, on the frontier queue
    assert len(frontier.calls) == 3


async def test_a_private_run_whose_local_open_calls_fail_fails_clearly(client, tmp_path, workspace):
    settings = make_settings(
        tmp_path,
        open_base_url=f"http://127.0.0.1:{free_port()}/v1",
        open_model="qwen-test",
        open_dialect="vllm",
        workers=LOCAL,
    )
    settings.policy.model_max_attempts = 2
    settings.policy.model_retry_initial_s = 0.1
    async with running_workers(client, settings):
        handle = await runs.start_run(
            client, settings, runs.build_request(settings, "What is 6*7?", sensitivity="private", workspace=workspace)
        )
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    assert "open model unavailable" in info.value.cause.message


async def test_invalid_local_open_output_is_retried_then_escalated_and_its_usage_counted(client, tmp_path, workspace):

    the_plan = plan(("Compute", "calculator"))
    with FakeOpenAIServer(model="qwen-test") as fake, FakeAnthropicServer() as frontier:
        fake.script(agent(the_plan, {1: Reply.raw("this is not json")}, answer="42"))
        frontier.script(agent(the_plan, {1: call("calculator", expression="6*7")}))
        settings = make_settings(
            tmp_path,
            open_base_url=fake.url,
            open_model="qwen-test",
            open_dialect="vllm",
            anthropic_api_key=SECRET_KEY,
            anthropic_base_url=frontier.url,
            frontier_model="claude-test",
            workers=LOCAL,
        )
        async with running_workers(client, settings):
            handle = await runs.start_run(
                client, settings, runs.build_request(settings, "What is 6*7?", workspace=workspace)
            )
            result = await handle.result()
    [step] = result.steps
    assert step.escalated and step.route == "frontier"
    assert [a.split(":")[0] for a in step.attempts] == ["open", "open", "frontier"]
    assert step.tool_results[0].output == "6*7 = 42"
    # plan + 2 invalid step attempts + answer on the open model; the failed attempts' tokens are counted.
    assert len(fake.calls) == 4 and result.cost.open_calls == 4


async def test_a_worker_killed_mid_local_call_is_replaced_and_the_run_completes(client, tmp_path, workspace):
    """A local activity cannot heartbeat: the server notices the dead worker when its workflow task times out,
    and the next worker runs the call again from the start (README, [workers] local_model_calls)."""

    home = tmp_path / "worker-home"
    home.mkdir()
    (home / "stakeflow.toml").write_text("[workers]\nlocal_model_calls = true\n")
    prefix = f"t{uuid.uuid4().hex[:8]}"
    with FakeOpenAIServer(model="qwen-test") as fake:
        script = agent(plan(("Compute", "calculator")), {1: call("calculator", expression="6*7")}, answer="42")
        # The step call answers slowly: the worker is killed while it is in flight.
        fake.script(lambda body: Reply.delayed(3.0, script(body)) if len(fake.calls) == 2 else script(body))
        env = worker_env(
            home,
            client,
            prefix,
            **open_endpoint_env(fake.url),
        )
        settings = make_settings(
            tmp_path,
            queue_prefix=prefix,
            open_base_url=fake.url,
            open_model="qwen-test",
            open_dialect="vllm",
            workers=LOCAL,
        )
        worker = spawn_worker(env, "workflows,tools")  # no open worker at all: the calls are local or nothing
        try:
            handle = await runs.start_run(client, settings, runs.build_request(settings, "6*7?", workspace=workspace))
            deadline = time.monotonic() + 60
            while len(fake.calls) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert len(fake.calls) == 2, worker_log(env)  # plan answered, the step's call in flight
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            worker = spawn_worker(env, "workflows,tools")
            result = await asyncio.wait_for(handle.result(), 90)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
    assert result.status == "completed" and result.answer == "42", worker_log(env)
    # What the killed worker had not recorded (its workflow task never completed) was asked again.
    assert len(fake.calls) >= 4
    history = await handle.fetch_history()
    assert _calls(history) == []  # still no regular activity: the replacement ran it locally too
