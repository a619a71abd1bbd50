"""A run's progress search attributes (what the Web UI's list and `stakeflow list` filter and show): a change of
what runs are found by goes at once, the counts of fast steps at most every PROGRESS_EVERY, all of them at the end.

Real dev server, real workers, the scripted model servers; the histories are read as Temporal recorded them.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest
from temporalio.api.enums.v1 import EventType

from stakeflow.core.contracts import KEYS
from stakeflow.services import runs
from stakeflow.workflows import bookkeeping
from tests.agent_script import agent, call, plan
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, Reply
from tests.support import EXAMPLE_WORKSPACE, open_settings, running_workers

READS = 4  # read-only steps on the open model, then one write on the frontier


def script():
    return agent(
        plan(*[(f"Read the notes ({i})", "read_file") for i in range(1, READS + 1)], ("Write it", "write_file")),
        {
            **{i: call("read_file", path="notes.txt") for i in range(1, READS + 1)},
            READS + 1: call("write_file", path="out.txt", content="grew 12%\n"),
        },
        answer="Revenue grew 12%.",
    )


@pytest.fixture
def fakes():
    with FakeOpenAIServer(model="qwen-test") as open_fake, FakeAnthropicServer() as frontier_fake:
        open_fake.script(script())
        frontier_fake.script(script())
        yield open_fake, frontier_fake


async def _run(client, tmp_path, fakes):
    open_fake, frontier_fake = fakes
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_bytes((EXAMPLE_WORKSPACE / "notes.txt").read_bytes())
    settings = open_settings(
        tmp_path,
        client,
        open_fake,
        anthropic_api_key="sk-ant-test-progress",
        anthropic_base_url=frontier_fake.url,
        frontier_model="claude-test",
    )
    req = runs.build_request(settings, "Summarise notes.txt into out.txt", workspace=ws, auto_approve=True)
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req, f"test-{uuid.uuid4().hex[:8]}")
        result = await handle.result()
    return handle, result


async def _progress_upserts(handle) -> list[dict]:
    """Each upsert of the history that carries a step count, as {attribute name: value}."""
    upserts = []
    for e in (await handle.fetch_history()).events:
        if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            values = {name: json.loads(p.data) for name, p in fields.items()}
            if KEYS["open_steps"].name in values or KEYS["frontier_steps"].name in values:
                upserts.append(values)
    return upserts


async def test_fast_steps_upsert_their_counts_once_and_a_frontier_step_at_once(client, tmp_path, fakes):
    handle, result = await _run(client, tmp_path, fakes)
    assert [s.route for s in result.steps] == ["open"] * READS + ["frontier"]

    upserts = await _progress_upserts(handle)
    # Before: one upsert of all six after every step (5 here). Now: the first step's (the counts were unset), the
    # frontier step's (a count runs are searched by changed), and the end's only if something changed after it.
    assert len(upserts) <= 3, upserts
    frontier = [u for u in upserts if u.get(KEYS["frontier_steps"].name) == 1]
    assert frontier and frontier[0][KEYS["open_steps"].name] == READS  # the counts it held back go with it

    # What the list shows at the end is the run's tally.
    attrs = (await handle.describe()).typed_search_attributes
    assert (attrs.get(KEYS["open_steps"]), attrs.get(KEYS["frontier_steps"]), attrs.get(KEYS["escalations"])) == (
        READS,
        1,
        0,
    )
    assert attrs.get(KEYS["stakes"]) == "high"


async def test_a_step_that_took_longer_than_the_throttle_upserts_its_count_at_once(client, tmp_path, fakes):
    """Step 2's model call takes longer than PROGRESS_EVERY: its count goes when it ends, as every step's did before.
    (Real time, not a patched constant: the suite replays every history it made with the code as it is.)"""
    open_fake, _ = fakes
    respond, calls = script(), []

    def slow_second_step(body):
        calls.append(1)
        item = respond(body)
        if len(calls) != 3:  # the plan, step 1, then step 2's call
            return item
        reply = item if isinstance(item, Reply) else Reply(output=item)
        return dataclasses.replace(reply, delay_s=bookkeeping.PROGRESS_EVERY.total_seconds() + 0.2)

    open_fake.script(slow_second_step)
    handle, result = await _run(client, tmp_path, fakes)
    assert [s.route for s in result.steps] == ["open"] * READS + ["frontier"]

    upserts = await _progress_upserts(handle)
    assert [u.get(KEYS["open_steps"].name) for u in upserts[:2]] == [1, 2]
