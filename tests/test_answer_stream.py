"""The answer call streams (activities/model_stream.py): called directly against the scripted servers, which stream
SSE as vLLM, llama.cpp and Anthropic do; an endpoint that does not stream falls back to one chunk; failures, usage and
model names are what the non-streamed call gives."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from stakeflow.activities import model_stream
from stakeflow.activities.model_stream import AnswerPublisher, batch_interval
from stakeflow.agents.types import RunEvent, Usage
from stakeflow.core.errors import MODEL_AUTH, MODEL_UNAVAILABLE
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, Reply
from tests.test_model_activity import call, call_error, frontier_settings, open_settings, request

ANSWER = "The total is 42, from notes.txt and the sheet."


@pytest.fixture
def open_server():
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def anthropic_server():
    with FakeAnthropicServer() as server:
        yield server


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[RunEvent]:
    """The events the answer call publishes (outside an activity it has no run to publish to)."""
    events: list[RunEvent] = []

    @contextlib.asynccontextmanager
    async def recorded(req):
        yield (lambda event, flush: events.append(event)), "7.1"

    monkeypatch.setattr(model_stream, "_events_of_run", recorded)
    return events


def answer_text(events: list[RunEvent]) -> str:
    return "".join(e.text for e in events if e.kind == "answer_delta")


def streamed(events: list[RunEvent], result) -> str:
    """The answer a reader puts together: what the activity published, then the rest the workflow appends from the
    result (``stream_call``, ``stream_sent``: workflows/answering.py)."""
    sent = answer_text(events)
    assert result.stream_call == "7.1" and result.stream_sent == len(sent)
    return sent + result.text[result.stream_sent :]


@pytest.mark.parametrize("dialect", ["llamacpp", "vllm"])
async def test_open_answer_streams_with_the_same_result(
    tmp_path: Path, open_server: FakeOpenAIServer, published: list[RunEvent], dialect: str
) -> None:
    open_server.usage = {"prompt_tokens": 120, "completion_tokens": 11, "cached_tokens": 0}
    open_server.chunk_delay_s = 0.05  # slower than the first batch interval: several batches
    open_server.script(lambda body: ANSWER)

    result = await call(open_settings(tmp_path, open_server, open_dialect=dialect), request("answer", stream=True))

    assert open_server.calls[0].body["stream"] is True
    assert result.text == ANSWER and result.model == "served-model"
    assert result.usage == Usage(input_tokens=120, output_tokens=11, requests=1)
    assert published[0].kind == "answer_started" and published[0].route == "open"
    deltas = [e for e in published if e.kind == "answer_delta"]
    assert streamed(published, result) == ANSWER and len(deltas) > 1


async def test_frontier_answer_streams(
    tmp_path: Path, anthropic_server: FakeAnthropicServer, published: list[RunEvent]
) -> None:
    anthropic_server.script(lambda body: ANSWER)

    result = await call(frontier_settings(tmp_path, anthropic_server), request("answer", "frontier", stream=True))

    assert anthropic_server.calls[0].body["stream"] is True
    assert result.text == ANSWER and result.model == "claude-test-1"
    assert result.usage == Usage(input_tokens=100, output_tokens=20, requests=1)
    assert streamed(published, result) == ANSWER


@pytest.mark.parametrize("how", [False, "ignore"])
async def test_an_open_endpoint_that_does_not_stream_gives_one_chunk(
    tmp_path: Path, open_server: FakeOpenAIServer, published: list[RunEvent], how: bool | str
) -> None:
    """Refusing ``stream: true`` (400), or answering it with one JSON body: the call is made again without it."""
    open_server.streams = how
    open_server.script(lambda body: ANSWER)

    result = await call(open_settings(tmp_path, open_server), request("answer", stream=True))

    assert result.text == ANSWER
    assert [bool(c.body.get("stream")) for c in open_server.calls] == [True, False]
    assert published == [] and (result.stream_call, result.stream_sent) == ("7.1", 0)  # the workflow appends it


async def test_streamed_failures_map_as_before(
    tmp_path: Path, open_server: FakeOpenAIServer, anthropic_server: FakeAnthropicServer, published: list[RunEvent]
) -> None:
    open_server.fail_next(429, headers={"retry-after": "7"})
    error = await call_error(open_settings(tmp_path, open_server), request("answer", stream=True))
    assert error.type == MODEL_UNAVAILABLE and not error.non_retryable and error.next_retry_delay.total_seconds() == 7
    assert len(open_server.calls) == 1  # a rate limit is no refusal to stream: not asked again

    anthropic_server.fail_next(401, message="invalid x-api-key")
    error = await call_error(frontier_settings(tmp_path, anthropic_server), request("answer", "frontier", stream=True))
    assert error.type == MODEL_AUTH and error.non_retryable and "ANTHROPIC_API_KEY" in str(error)


async def test_a_truncated_answer_is_what_the_plain_call_returns(
    tmp_path: Path, open_server: FakeOpenAIServer, published: list[RunEvent]
) -> None:
    """A finish_reason of "length" after text: no second call without streaming, and the same result."""
    open_server.enqueue(Reply(output=ANSWER, finish_reason="length"), Reply(output=ANSWER, finish_reason="length"))
    settings = open_settings(tmp_path, open_server)
    streamed = await call(settings, request("answer", stream=True))
    plain = await call(settings, request("answer"))

    assert (streamed.text, streamed.usage, streamed.model) == (plain.text, plain.usage, plain.model)
    assert [bool(c.body.get("stream")) for c in open_server.calls] == [True, False]


def test_batches_are_bounded_whatever_the_token_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tokens every millisecond for the open route's whole 5 minutes: the batch count grows with log(time)."""
    events: list[RunEvent] = []
    clock = [0.0]
    monkeypatch.setattr(model_stream.time, "monotonic", lambda: clock[0])
    publisher = AnswerPublisher(lambda event, flush: events.append(event), "1.1")
    for i in range(300_000):
        clock[0] = i / 1000
        publisher.add("tok ")
    publisher.flush()

    assert publisher.batches <= 180 and len(events) == publisher.batches
    assert "".join(e.text for e in events) == "tok " * 300_000
    assert (batch_interval(0), batch_interval(25), batch_interval(175)) == (0.2, 0.4, 0.2 * 2**7)


async def test_a_fast_answer_sends_nothing_and_leaves_it_all_to_the_workflow(
    tmp_path: Path, open_server: FakeOpenAIServer, published: list[RunEvent]
) -> None:
    """Written in less than the first batch interval: no batch is due before the call returns, so nothing is sent;
    the answer (and its ``answer_started``) comes with the result, where a signal would have cost the run a workflow
    task of its own."""
    open_server.chunk_delay_s = 0.0
    open_server.script(lambda body: ANSWER)

    result = await call(open_settings(tmp_path, open_server), request("answer", stream=True))

    assert published == [] and (result.stream_call, result.stream_sent) == ("7.1", 0)
    assert streamed(published, result) == ANSWER


async def test_an_answer_with_nowhere_to_publish_is_left_whole_to_the_workflow(
    tmp_path: Path, open_server: FakeOpenAIServer
) -> None:
    """Outside a workflow's activity (and in a local activity) nothing is signalled: the workflow appends it all."""
    open_server.script(lambda body: ANSWER)

    result = await call(open_settings(tmp_path, open_server), request("answer", stream=True))

    assert result.text == ANSWER and (result.stream_call, result.stream_sent) == ("0.1", 0)


def test_a_stream_that_is_not_the_answer_is_sent_whole_by_the_activity(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the streamed text is not the result's, the activity sends what it holds and leaves the workflow nothing:
    a reader never gets a tail cut from a text it was not sent."""
    clock = [100.0]
    monkeypatch.setattr(model_stream.time, "monotonic", lambda: clock[0])
    events: list[RunEvent] = []
    publisher = AnswerPublisher(lambda event, flush: events.append(event), "1.1")
    publisher.started("open", "m")
    clock[0] += 0.5
    publisher.add("The total")  # the first batch is due: the call started an interval ago
    publisher.add(" is 42.")

    assert publisher.finish("The total is 41.") == ("", 0)
    assert answer_text(events) == "The total is 42."

    events.clear()
    publisher = AnswerPublisher(lambda event, flush: events.append(event), "1.2")
    publisher.started("open", "m")
    publisher.add("The")  # not yet due
    clock[0] += 0.5
    publisher.add(" total")
    publisher.add(" is 42.")
    assert publisher.finish("The total is 42.") == ("1.2", len("The total"))
    assert [e.kind for e in events] == ["answer_started", "answer_delta"] and answer_text(events) == "The total"
