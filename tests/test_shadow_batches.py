"""Shadowing a run with a big goal: each shadow child's input stays far below Temporal's payload limit (2 MB),
and the run completes as it would without shadowing. Real dev server and workers, scripted models."""

from __future__ import annotations

import asyncio

import pytest

from stakeflow.services import runs
from stakeflow.workflows.calls import SHADOW_BATCH_BYTES
from tests.agent_script import agent, plan, think
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, output_schema
from tests.support import make_settings, running_workers

GOAL = "Summarise this report in one line.\n" + "The quarterly figures rose again in every region. " * 6000


def script(route: str):
    steps = {1: think("noted"), 2: think("condensed")}
    inner = agent(plan(("Read the report", None), ("Condense it", None)), steps, answer=f"summary from {route}")

    def respond(body):
        if "winner" in ((output_schema(body) or {}).get("properties") or {}):
            return {"winner": "tie", "reason": "the same"}
        return inner(body)

    return respond


@pytest.fixture
def fakes():
    with FakeOpenAIServer(model="qwen-test") as open_fake, FakeAnthropicServer() as frontier_fake:
        open_fake.script(script("open"))
        frontier_fake.script(script("frontier"))
        yield open_fake, frontier_fake


def settings_for(tmp_path, open_fake, frontier_fake):
    settings = make_settings(
        tmp_path,
        open_base_url=open_fake.url,
        open_model="qwen-test",
        open_dialect="vllm",
        anthropic_api_key="sk-ant-shadow-test",
        anthropic_base_url=frontier_fake.url,
        frontier_model="claude-sonnet-4-6",
    )
    settings.evals.shadow_rate = 1.0
    return settings


async def shadows_of(client, workflow_id: str) -> list[tuple[int, int]]:
    """Each shadow child of the run: (calls it evaluated, bytes of its input)."""
    found = []
    async for wf in client.list_workflows(f"ParentWorkflowId = '{workflow_id}'"):
        handle = client.get_workflow_handle(wf.id)
        async for event in handle.fetch_history_events():
            size = sum(len(p.data) for p in event.workflow_execution_started_event_attributes.input.payloads)
            break
        found.append((len(await handle.result()), size))
    return found


async def test_a_300_kb_goal_with_every_call_shadowed_completes_with_small_shadows(client, tmp_path, fakes):
    assert len(GOAL) > 300_000
    settings = settings_for(tmp_path, *fakes)
    req = runs.build_request(settings, GOAL, tools=[])
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req)
        result = await asyncio.wait_for(handle.result(), 90)  # it hung, RUNNING, when a shadow's input was too large
        shadows = await shadows_of(client, handle.id)
    assert result.answer == "summary from open" and result.cost.frontier_calls == 0  # the run is its own
    assert sum(n for n, _ in shadows) == 4, shadows  # the plan, both steps and the answer: each shadowed
    assert max(size for _, size in shadows) <= SHADOW_BATCH_BYTES, shadows


async def test_calls_too_big_to_shadow_are_left_out_and_the_run_completes(client, tmp_path, fakes):
    settings = settings_for(tmp_path, *fakes)
    req = runs.build_request(settings, GOAL * 2, tools=[])  # every prompt holds 600 kB of goal
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req)
        result = await asyncio.wait_for(handle.result(), 90)
        shadows = await shadows_of(client, handle.id)
    assert result.answer == "summary from open" and result.status == "completed"
    assert shadows == []
