"""A run when a model endpoint fails: the open endpoint down (the frontier takes over, or a private run fails
saying why), the frontier rate-limited (its Retry-After honoured in history) or refusing the key (the run fails at
once, naming it)."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowFailureError

from stakeflow.services import runs
from tests.agent_script import agent, call, plan, think
from tests.fakes import Reply
from tests.support import running_workers
from tests.workflow_support import (  # noqa: F401  (fixtures are used by name)
    SECRET_KEY,
    frontier_fake,
    open_down_settings,
    open_fake,
    run_task,
    settings_for,
    workspace,
)


async def test_open_endpoint_down_falls_back_to_frontier(client, tmp_path, frontier_fake, workspace):
    frontier_fake.script(agent(plan(("Compute", "calculator")), {1: call("calculator", expression="6*7")}, answer="42"))
    settings = open_down_settings(tmp_path, frontier_fake, frontier_model="claude-test")
    result = await run_task(client, settings, "What is 6*7?", workspace=workspace)
    [step] = result.steps
    assert (step.route, step.fallback, step.status) == ("frontier", True, "ok")
    assert step.reason.endswith("fallback: open model endpoint unavailable")
    assert result.plan_route is not None and result.answer == "42"
    assert any("fallback" in n for n in result.notices)
    assert len(frontier_fake.calls) == 3  # plan, step, answer: all fell back


async def test_open_endpoint_down_on_private_run_fails_clearly(client, tmp_path, frontier_fake, workspace):
    settings = open_down_settings(tmp_path, frontier_fake)
    with pytest.raises(WorkflowFailureError) as info:
        await run_task(client, settings, "What is 6*7?", sensitivity="private", workspace=workspace)
    msg = info.value.cause.message
    assert "plan 'plan' failed: open model unavailable" in msg and "STAKEFLOW_OPEN_BASE_URL" in msg
    assert "no fallback: data is private" in msg
    assert frontier_fake.calls == []


async def test_frontier_429_retry_after_is_honoured_in_history(client, tmp_path, open_fake, frontier_fake, workspace):
    from temporalio.api.enums.v1 import EventType

    open_fake.script(agent(plan(("Decide", None, "high")), {}, answer="ok"))
    frontier_fake.script(agent(None, {1: think("go")}, answer="ok"))
    frontier_fake.fail_next(429, headers={"retry-after": "3"})
    settings = settings_for(tmp_path, open_fake, frontier_fake)
    settings.policy.model_retry_initial_s = 0.1  # without retry-after, the retry would come after 0.1 s
    req = runs.build_request(settings, "decide", workspace=workspace)
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req)
        result = await handle.result()
        history = await handle.fetch_history()
    assert result.steps[0].route == "frontier" and result.steps[0].status == "ok"
    # The step's call_model ran twice: attempt 2 started at least retry-after after attempt 1 was scheduled.
    started = [
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.attempt == 2
    ]
    assert len(started) == 1
    scheduled_id = started[0].activity_task_started_event_attributes.scheduled_event_id
    scheduled = next(e for e in history.events if e.event_id == scheduled_id)
    waited = started[0].event_time.ToDatetime() - scheduled.event_time.ToDatetime()
    assert waited.total_seconds() >= 3.0
    assert (
        "429" in started[0].activity_task_started_event_attributes.last_failure.message
        or started[0].activity_task_started_event_attributes.last_failure.application_failure_info.type
        == "ModelUnavailable"
    )


async def test_frontier_401_fails_at_once_naming_the_key(client, tmp_path, open_fake, frontier_fake, workspace):
    open_fake.script(agent(plan(("Decide", None, "high")), {}, answer="ok"))
    frontier_fake.script(lambda body: Reply.error(401, "invalid x-api-key"))
    settings = settings_for(tmp_path, open_fake, frontier_fake)
    with pytest.raises(WorkflowFailureError) as info:
        await run_task(client, settings, "decide", workspace=workspace)
    msg = info.value.cause.message
    assert "ANTHROPIC_API_KEY" in msg and SECRET_KEY not in msg
    assert len(frontier_fake.calls) == 1  # non-retryable: asked once
