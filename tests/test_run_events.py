"""A run's event stream end to end: real workers on the suite's dev server, the scripted open model streaming its
answer word by word. What the reader sees (steps, the answer growing, done), what the history holds (the deltas once,
in batches; nothing per reader), late readers, offsets, continue-as-new and a re-asked answer."""

from __future__ import annotations

import asyncio
import base64

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.contrib.workflow_streams import PublishInput

from stakeflow import Client
from stakeflow.activities import model_stream
from stakeflow.agents.types import AnswerSoFar, RunEvent
from stakeflow.services import runs
from tests.agent_script import agent, call, plan
from tests.fakes import FakeOpenAIServer
from tests.support import open_settings, running_workers

ANSWER = "Revenue grew 12% over Q2, driven by the Nordic region, where two new stores opened in May and June."
SCRIPT = agent(
    plan(("Read the notes", "read_file"), ("Think it over", None)),
    {1: call("read_file", path="notes.txt"), 2: {"tool_calls": [], "result": "fine"}},
    answer=ANSWER,
)


@pytest.fixture
def open_fake():
    with FakeOpenAIServer(model="qwen-test") as server:
        server.chunk_delay_s = 0.03  # ~20 words: the answer takes ~0.6 s to write, several batches
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


async def collect(events) -> list[RunEvent]:
    return [e async for e in events]


async def history_signals(client, workflow_id: str, sequences: list[int] | None = None) -> tuple[list[str], int]:
    """The answer text each stream signal of the run's history carries (one entry per signal), and the number of
    updates in it (a reader polling by update would add some). ``sequences`` gets each signal's batch sequence."""
    converter = client.data_converter
    texts, updates = [], 0
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            updates += 1
        if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            continue
        attrs = event.workflow_execution_signaled_event_attributes
        [batch] = await converter.decode(attrs.input.payloads, [PublishInput])
        if sequences is not None:
            sequences.append(batch.sequence)
        text = ""
        for entry in batch.items:
            payload = Payload()
            payload.ParseFromString(base64.b64decode(entry.data))
            text += converter.payload_converter.from_payload(payload, RunEvent).text
        texts.append(text)
    return texts, updates


async def test_a_reader_sees_steps_the_answer_growing_and_done(client, settings, open_fake, workspace):
    # The answer's first 7 words at once, a pause past the first batch's interval, then the rest at once: the 8th
    # event (the 7th word) goes in a batch, the words after it come within the next interval, so with the result.
    # A steady 0.03 s a word put the last word past an interval now and then (CI under load): signalled whole.
    open_fake.chunk_delay_s = [0.0] * 7 + [model_stream.FIRST_INTERVAL_S + 0.1]
    open_fake.script(SCRIPT)
    async with running_workers(client, settings):
        stakeflow = Client(client, settings)
        handle = await stakeflow.start("Summarise notes.txt", workspace=workspace)
        events = await asyncio.wait_for(collect(handle.stream()), 60)
        result = await handle.result()

    kinds = [(e.kind, e.step) for e in events if e.kind != "answer_delta"]
    assert kinds == [
        ("step_started", 0),
        ("step_finished", 0),
        ("step_started", 1),
        ("step_finished", 1),
        ("step_started", 2),
        ("step_finished", 2),
        ("step_started", 3),
        ("answer_started", 0),
        ("done", 0),
    ]
    assert [e.offset for e in events] == list(range(len(events)))
    deltas = [e for e in events if e.kind == "answer_delta"]
    assert len(deltas) > 1 and "".join(d.text for d in deltas) == ANSWER  # it grew, and it is whole
    assert events[-1].text == result.answer == ANSWER and events[-1].status == "completed"
    assert events[1].route == "open" and events[3].status == "ok"
    answer = AnswerSoFar()
    for e in events:
        answer.apply(e)
    assert answer.text == ANSWER

    # The history: the deltas once, in the activity's batches (one signal each) but the last, which the workflow
    # appended from the activity's result (no signal, no workflow task of its own); readers added nothing.
    texts, updates = await history_signals(client, handle.workflow_id)
    assert ANSWER.startswith("".join(texts)) and "".join(texts) != ANSWER and updates == 0
    assert len(texts) < len(deltas) and "".join(texts) + deltas[-1].text == ANSWER


async def test_an_answer_written_within_the_first_interval_is_signalled_nowhere(client, settings, open_fake, workspace):
    """The whole answer streams in well under ``FIRST_INTERVAL_S``: no batch is due before the call returns, so the
    activity signals nothing (no signal event, no workflow task for it) and the workflow appends the answer from the
    result. The reader sees the same events as when it streamed in batches."""
    open_fake.chunk_delay_s = 0.0
    open_fake.script(SCRIPT)
    async with running_workers(client, settings):
        handle = await Client(client, settings).start("Summarise notes.txt", workspace=workspace)
        events = await asyncio.wait_for(collect(handle.stream()), 60)

    texts, updates = await history_signals(client, handle.workflow_id)
    assert texts == [] and updates == 0
    kinds = [e.kind for e in events]
    assert kinds[-3:] == ["answer_started", "answer_delta", "done"] and events[-2].text == ANSWER


async def test_a_batch_in_flight_as_the_answer_ends_is_signalled_once(
    client, settings, open_fake, workspace, monkeypatch
):
    """Every chunk due at once and written at once: the call returns while a batch's signal is still on its way.
    That signal is waited for, not cancelled and sent again: each batch is in the history once."""
    monkeypatch.setattr(model_stream, "FIRST_INTERVAL_S", 0.0)  # the activity's side: the workflow never reads it
    open_fake.chunk_delay_s = 0.0
    open_fake.script(SCRIPT)
    async with running_workers(client, settings):
        handle = await Client(client, settings).start("Summarise notes.txt", workspace=workspace)
        events = await asyncio.wait_for(collect(handle.stream()), 60)

    sequences: list[int] = []
    texts, _ = await history_signals(client, handle.workflow_id, sequences)
    assert texts and sorted(sequences) == sorted(set(sequences))
    assert ANSWER.startswith("".join(texts))
    assert "".join(e.text for e in events if e.kind == "answer_delta") == ANSWER


async def test_a_late_reader_gets_what_it_missed_and_resumes_after_an_offset(client, settings, open_fake, workspace):
    open_fake.script(SCRIPT)
    async with running_workers(client, settings):
        stakeflow = Client(client, settings)
        handle = await stakeflow.start("Summarise notes.txt", workspace=workspace)
        await handle.result()
        everything = await collect(stakeflow.stream(handle.workflow_id))  # joined after the end
        rest = await collect(handle.stream(from_offset=everything[3].offset + 1))  # reconnecting after event 3

    assert everything[0].kind == "step_started" and everything[-1].kind == "done"
    assert everything[-1].text == ANSWER
    assert rest == everything[4:]


async def test_continue_as_new_carries_the_stream(client, settings, open_fake, workspace):
    """Two generations: the reader follows the run across them, offsets going on, nothing missed or repeated."""
    open_fake.script(SCRIPT)
    req = runs.build_request(settings, "Summarise notes.txt", workspace=str(workspace))
    req.steps_per_history = 1
    async with running_workers(client, settings):
        handle = await runs.start_run(client, settings, req, None)
        events = await asyncio.wait_for(collect(runs.run_events(client, handle.id)), 60)
        result = await runs.wait_result(handle)

    started = [e.step for e in events if e.kind == "step_started"]
    assert started == [0, 1, 2, 3]
    assert [e.offset for e in events] == list(range(len(events)))
    assert events[-1].kind == "done" and events[-1].text == result.answer == ANSWER
    described = await client.get_workflow_handle(handle.id).describe()
    assert described.run_id != handle.first_execution_run_id  # it did continue as new


async def test_a_re_asked_answer_replaces_the_first_instead_of_adding_to_it(client, settings, open_fake, workspace):
    """The answer check re-asks an answer nothing supports: the reader is told to start over, and ends with the
    final answer alone."""
    wrong = "Revenue grew 15% over Q2."
    answers = iter([wrong, ANSWER])
    the_plan = plan(("Read the notes", "read_file"))
    open_fake.script(agent(the_plan, {1: call("read_file", path="notes.txt")}, answer=lambda body: next(answers)))
    async with running_workers(client, settings):
        stakeflow = Client(client, settings)
        handle = await stakeflow.start("Summarise notes.txt", workspace=workspace)
        events = await asyncio.wait_for(collect(handle.stream()), 60)

    starts = [e for e in events if e.kind == "answer_started"]
    assert len(starts) == 2 and starts[0].call != starts[1].call
    answer, shown = AnswerSoFar(), []
    for e in events[:-1]:  # before done: what a reader has put together from the deltas
        if answer.apply(e) == "reset":
            shown.append("")
        elif e.kind == "answer_delta":
            shown[-1] = answer.text
    assert shown == [wrong, ANSWER] and answer.text == ANSWER
    assert events[-1].kind == "done" and events[-1].text == ANSWER


async def test_a_worker_killed_mid_answer_the_retry_streams_again_and_the_reader_sees_one_answer(client, tmp_path):
    """SIGKILL while the answer streams: the retried call (attempt 2, on a new worker) starts the answer over; the
    reader, following the rule (AnswerSoFar), shows it once, and ``done`` carries it whole."""
    from tests.durability_support import kill_mid_answer

    events, result, answer_calls = await kill_mid_answer(client, tmp_path, ANSWER, SCRIPT)

    starts = [e for e in events if e.kind == "answer_started"]
    assert [s.call.rsplit(".", 1)[1] for s in starts] == ["1", "2"]  # the same call, attempt 1 then 2
    first_deltas = "".join(e.text for e in events if e.kind == "answer_delta" and e.call == starts[0].call)
    assert first_deltas and ANSWER.startswith(first_deltas) and first_deltas != ANSWER  # cut off by the kill
    answer = AnswerSoFar()
    for e in events[:-1]:
        answer.apply(e)
    assert answer.text == ANSWER  # before done: the second attempt's text alone, not the first's glued in front
    assert events[-1].kind == "done" and events[-1].text == result.answer == ANSWER
    assert answer_calls == 2


async def test_the_readme_streaming_example_runs_as_written(client, settings, open_fake, capsys):
    """README, "Answers that stream": ``follow`` prints the steps and the answer as it grows, and returns it."""
    from tests.test_client import readme_python

    [example] = readme_python("## Answers that stream")
    scope: dict = {}
    exec(compile(example, "README.md", "exec"), scope)
    open_fake.script(SCRIPT)
    async with running_workers(client, settings):
        answer = await asyncio.wait_for(scope["follow"](Client(client, settings), "Summarise notes.txt"), 60)
    printed = capsys.readouterr().out
    assert answer == ANSWER and printed.endswith(ANSWER)
    assert "step 1 ok on the open model" in printed


async def test_a_terminated_run_ends_its_readers_with_a_done_saying_so(client, settings, open_fake, workspace):
    """Terminated, the workflow cannot say it ended: the reader finds out and ends with ``done`` all the same."""
    from tests.fakes import Reply

    open_fake.script(lambda body: Reply.delayed(30, "too late"))
    async with running_workers(client, settings):
        handle = await Client(client, settings).start("Summarise notes.txt", workspace=workspace)
        reading = asyncio.create_task(collect(handle.stream()))
        await asyncio.sleep(1)
        await client.get_workflow_handle(handle.workflow_id).terminate("test")
        events = await asyncio.wait_for(reading, 30)

    assert [e.kind for e in events] == ["step_started", "done"]
    assert (events[-1].status, events[-1].error) == ("terminated", "the run terminated")


async def test_a_failed_run_ends_its_stream_with_done_and_the_reason(client, settings, open_fake, workspace):
    from tests.fakes import Reply

    open_fake.script(lambda body: Reply.error(401, "bad key"))
    async with running_workers(client, settings):
        handle = await Client(client, settings).start("Summarise notes.txt", workspace=workspace)
        events = await asyncio.wait_for(collect(handle.stream()), 60)

    assert [e.kind for e in events] == ["step_started", "done"]
    assert events[-1].status == "failed" and "plan" in events[-1].error and "OPEN_API_KEY" in events[-1].error
