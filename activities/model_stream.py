"""The answer as the model writes it: ``call_model``'s answer call streamed, its text published to the run's events.

The call is the same request (pydantic-ai's ``model_request_stream`` instead of ``model_request``: SSE from vLLM and
llama.cpp, Anthropic's streaming Messages API), and returns the same response: models.py parses it, prices it and
maps its failures as for any call. What is new is on the side: each batch of text goes to the run's event stream
(agents/types/events.py) by the ``temporalio.contrib.workflow_streams`` signal, deduplicated by publisher and
sequence, so a batch is in the run's history once, and survives this worker. The history holds the deltas once,
batched, and the final answer once (the activity's result); readers read by query and add nothing to it.

The last batch is not sent: the activity's result says how much of the answer went (``stream_call``,
``stream_sent``) and the workflow appends the rest to the events itself when the result arrives, where a signal
would have cost a workflow task of its own. The first batch goes ``FIRST_INTERVAL_S`` after the call starts at the
soonest, so an answer written faster than that (a fast model, a short answer) sends nothing at all: it comes with
the result (bench/overhead.py's answer sent two signals, one of them a batch sent twice, and its run a workflow task
for them). An answer published nowhere (a local activity, outside a workflow) is appended whole the same way. A
batch still on its way when the call returns is waited for, never cancelled and sent again.

Bounds: a batch goes at most every ``batch_interval(n)`` seconds, an interval that doubles every
``DOUBLE_EVERY`` batches, so a call of T seconds sends O(log T) batches (at most ~176 in the open route's 5-minute
limit), whatever the rate of tokens. An endpoint that does not stream (it refuses ``stream: true``, or answers it
with one JSON body) gets the call again without it, and the workflow appends the whole text.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import httpx
from pydantic_ai.direct import model_request, model_request_stream
from pydantic_ai.exceptions import ModelHTTPError, UnexpectedModelBehavior
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    ModelResponseStreamEvent,
    PartDeltaEvent,
    PartStartEvent,
    SystemPromptPart,
    TextPart,
    TextPartDelta,
    UserPromptPart,
)
from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RequestUsage
from temporalio import activity
from temporalio.contrib.workflow_streams import WorkflowStreamClient

from stakeflow.agents.types import ModelCallRequest, RunEvent
from stakeflow.core.contracts import EVENTS_TOPIC

log = logging.getLogger("stakeflow.stream")

FIRST_INTERVAL_S = 0.2
DOUBLE_EVERY = 25
# Statuses with which a server refuses ``stream: true`` itself (a proxy, an old server): the call is made without it.
_REFUSES_STREAMING = {400, 404, 405, 415, 422, 501}
# How long the last batch may take to reach Temporal before the call returns without it (the final answer is the
# activity's result either way).
PUBLISH_RETRY = timedelta(seconds=20)


def batch_interval(sent: int) -> float:
    """Seconds between batches once ``sent`` have gone: 0.2 s, doubling every ``DOUBLE_EVERY`` batches."""
    return FIRST_INTERVAL_S * 2 ** (sent // DOUBLE_EVERY)


Send = Callable[[RunEvent, bool], None]  # an event, and whether to send it (and what waits) at once


class AnswerPublisher:
    """Text to the run's event stream in batches, through ``send`` (None: nowhere, outside an activity)."""

    def __init__(self, send: Send | None, call: str) -> None:
        self._send = send
        self.call = call
        self._pending: list[str] = []
        self.batches = 0
        self.sent = 0  # characters of the answer sent so far
        self.received = False  # any text at all (sent or still buffered)
        self._last = time.monotonic()  # the call's start: the first batch waits an interval too
        self._started: RunEvent | None = None  # goes with the first batch: a call that sends none sends nothing

    def started(self, route: str, model: str) -> None:
        self._started = RunEvent(kind="answer_started", call=self.call, route=route, model=model)

    def add(self, text: str) -> None:
        """Buffer ``text``; send the buffer once the interval since the last batch has passed."""
        if not text:
            return
        self.received = True
        self._pending.append(text)
        now = time.monotonic()
        if now - self._last >= batch_interval(self.batches):
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        if not self._pending or self._send is None:  # nowhere to send: the workflow appends it all (finish)
            return
        text = "".join(self._pending)
        self._pending.clear()
        self.batches += 1
        self.sent += len(text)
        self._last = time.monotonic() if now is None else now
        if self._started is not None:
            self._send(self._started, False)
            self._started = None
        self._send(RunEvent(kind="answer_delta", call=self.call, text=text), True)

    def finish(self, text: str) -> tuple[str, int]:
        """The call's id and how much of ``text`` (the answer the result carries) was sent: the workflow appends
        the rest. If what streamed is not ``text`` the rest is sent here, and the workflow appends nothing."""
        if self._send is not None and "".join(self._pending) != text[self.sent :]:
            self.flush()
            return "", 0
        self._pending.clear()
        return self.call, self.sent


@contextlib.asynccontextmanager
async def _events_of_run(req: ModelCallRequest) -> AsyncIterator[tuple[Send | None, str]]:
    """How to send to the stream of the workflow that runs this call, and the call's id there (nothing to send to
    outside an activity). Nothing here fails the call: the stream is for watchers, the answer is the result."""
    # A local activity ([workers] local_model_calls) holds its workflow task open while it runs: a signal to its own
    # workflow then waits behind that task, and the run hung (tests/test_local_model_calls.py). Its answer comes whole.
    if not activity.in_activity() or not activity.info().workflow_id:
        yield None, "0.1"
        return
    info = activity.info()
    if info.is_local:
        yield None, f"{info.activity_id}.{info.attempt}"
        return
    # Sent by a task of our own, not the client's timed flusher: cancelling that one as a batch is due can lose the
    # cancellation on Python 3.11 (asyncio.wait_for), and the call would never return.
    client = WorkflowStreamClient.from_within_activity(max_retry_duration=PUBLISH_RETRY)
    topic = client.topic(EVENTS_TOPIC, type=RunEvent)
    due = asyncio.Event()
    closing = False

    async def sender() -> None:
        while not closing:
            await due.wait()
            due.clear()
            await client.flush()

    def send(event: RunEvent, now: bool) -> None:
        topic.publish(event)
        if now:
            due.set()

    sending = asyncio.create_task(sender())
    try:
        yield send, f"{info.activity_id}.{info.attempt}"
    finally:
        # The sender ends after the send under way: cancelled, that signal may reach the workflow and still be
        # pending here, and the flush below would send the batch again (a second signal event, a workflow task).
        closing = True
        due.set()
        try:
            await asyncio.wait_for(asyncio.shield(sending), PUBLISH_RETRY.total_seconds())
            await client.flush()  # what was buffered after the sender's last send
        except Exception as e:  # the run ended, or Temporal is away: watchers miss deltas, not the answer
            log.warning("answer deltas of run %s not all published: %s", req.run_id, type(e).__name__)
        finally:
            sending.cancel()  # done already, unless Temporal did not answer in time or this call was cancelled


# The call's id in the run's events, and the characters of the answer sent (AnswerPublisher.finish).
StreamTail = tuple[str, int]


async def answer_request(
    model: Model,
    messages: list[ModelMessage],
    settings: ModelSettings,
    params: ModelRequestParameters,
    req: ModelCallRequest,
    *,
    tokenizer_url: str = "",
) -> tuple[ModelResponse, StreamTail]:
    """The answer's model request, streamed and published: the response ``model_request`` would have returned (its
    parts, usage and model name), so models.py parses, prices and maps failures as for any call, and what the
    workflow is to append (the result's ``stream_call``, ``stream_sent``). ``tokenizer_url``: a llama.cpp server's
    root, whose stream reports no usage (see ``counted_usage``)."""
    response, tail = await _streamed_answer(model, messages, settings, params, req)
    if tokenizer_url and not response.usage.output_tokens:
        response = await counted_usage(tokenizer_url, model.model_name, messages, response)
    return response, tail


async def _streamed_answer(
    model: Model,
    messages: list[ModelMessage],
    settings: ModelSettings,
    params: ModelRequestParameters,
    req: ModelCallRequest,
) -> tuple[ModelResponse, StreamTail]:
    async with _events_of_run(req) as (send, call):
        publisher = AnswerPublisher(send, call)
        publisher.started(req.endpoint.route, model.model_name)
        try:
            async with model_request_stream(
                model, messages, model_settings=settings, model_request_parameters=params
            ) as stream:
                async for event in stream:
                    publisher.add(_text_of(event))
                response = stream.get()
            return response, publisher.finish(_answer_text(response))
        except Exception as e:
            if req.endpoint.route != "open" or publisher.received or not _refused_streaming(e):
                raise
        log.info("the open endpoint did not stream: answer call %s made without streaming", publisher.call)
        response = await model_request(model, messages, model_settings=settings, model_request_parameters=params)
        return response, (publisher.call, 0)  # nothing streamed: the workflow appends the whole answer


def _answer_text(response: ModelResponse) -> str:
    return "".join(p.content for p in response.parts if isinstance(p, TextPart))


COUNT_TIMEOUT_S = 10.0


async def counted_usage(
    root_url: str, model: str, messages: list[ModelMessage], response: ModelResponse
) -> ModelResponse:
    """``response`` with its tokens counted by the server's own tokenizer: llama.cpp's server (llama-cpp-python
    0.3) ignores ``stream_options`` and streams no usage, so a streamed answer counted 0 tokens and token budgets
    missed it. Output: the answer's text, which is what the model wrote. Input: the text of the prompt's messages,
    which leaves out the chat template's few tokens per message (72 counted by the server against 59 here for a
    two-message prompt on SmolLM2). Unchanged, with a warning, when the server cannot count."""
    prompt = "\n".join(
        p.content
        for m in messages
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, (SystemPromptPart, UserPromptPart)) and isinstance(p.content, str)
    )
    answer = _answer_text(response)
    try:
        async with httpx.AsyncClient(base_url=root_url, timeout=COUNT_TIMEOUT_S) as http:
            counts = []
            for text in (prompt, answer):
                reply = await http.post("/extras/tokenize/count", json={"input": text, "model": model})
                reply.raise_for_status()
                counts.append(int(reply.json()["count"]))
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
        log.warning("the streamed answer's tokens are not counted: %s: %s", root_url, type(e).__name__)
        return response
    return dataclasses.replace(response, usage=RequestUsage(input_tokens=counts[0], output_tokens=counts[1]))


def _text_of(event: ModelResponseStreamEvent) -> str:
    """The text an event adds to the answer (a text part starting with some, or a delta of one)."""
    if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
        return event.part.content
    if isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
        return event.delta.content_delta
    return ""


def _refused_streaming(e: Exception) -> bool:
    """The endpoint refused ``stream: true`` (an HTTP error before any text), or answered it with a JSON body, which
    reads as a stream with no event at all."""
    if isinstance(e, ModelHTTPError):
        return e.status_code in _REFUSES_STREAMING
    return isinstance(e, UnexpectedModelBehavior) and "without content" in str(e)
