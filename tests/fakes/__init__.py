"""Scripted model servers for tests: real HTTP, so the real openai/anthropic clients and pydantic-ai run.

``FakeOpenAIServer`` speaks the OpenAI Chat Completions API (``POST /v1/chat/completions``,
``GET /v1/models``), as vLLM and llama.cpp's server do; ``.url`` ends in ``/v1`` (give it as
STAKEFLOW_OPEN_BASE_URL). ``FakeAnthropicServer`` speaks the Anthropic Messages API (``POST /v1/messages``);
``.url`` is the root (give it as ANTHROPIC_BASE_URL). Both run on 127.0.0.1 in a thread:

    with FakeOpenAIServer() as server:             # or server.start() ... server.stop()
        server.script(lambda body: {"steps": [{"title": "t", "tool": None, "stakes": "low"}]})
        server.fail_next(429, headers={"retry-after": "7"})   # queued replies go first
        ...
        server.calls[0].body["response_format"]   # every request is recorded (parsed JSON, raw, headers)

A responder (called with the parsed request body) or a queued item (``enqueue``) gives what the model
should "say":

- a ``dict`` or pydantic model: the structured output. The fake wraps it in the wire format the request
  asked for: a call of the request's output tool (pydantic-ai's ``final_result``) when the request offers
  tools, else JSON text content (``response_format`` json_schema / json_object, or prompted output).
- a ``str``: plain text content (an answer).
- a ``Reply``: full control: ``Reply.raw(text)`` (content sent verbatim, e.g. invalid JSON),
  ``Reply(tool_call=(name, args))``, ``Reply.error(status, message, headers=...)``,
  ``Reply.delayed(seconds, then)``, and per-reply ``usage``, ``model``, ``finish_reason``.

``purpose_of(body)`` ("plan" / "step" / "answer"), ``output_schema(body)`` and ``prompt_text(body)`` help a
responder decide what to answer. Usage is ``server.usage`` (provider keys; fixed defaults), reported model
is the requested one unless ``server.reported_model`` is set, and ``models=[...]`` makes any other model
name a 404 in the provider's own words.

A request with ``"stream": true`` is answered as Server-Sent Events in the provider's streaming format (the same
reply, its text in word-sized chunks ``chunk_delay_s`` apart), unless ``server.streams`` says otherwise:
``False`` refuses it (400, as a server that cannot stream), ``"ignore"`` answers with one JSON body.
"""

from tests.fakes._anthropic import FakeAnthropicServer, PromptCache
from tests.fakes._openai import FakeOpenAIServer
from tests.fakes._requests import RecordedRequest, output_schema, output_tool_name, prompt_text, purpose_of
from tests.fakes._server import Reply, Responder, Streamed, chunks

__all__ = [
    "FakeAnthropicServer",
    "FakeOpenAIServer",
    "PromptCache",
    "RecordedRequest",
    "Reply",
    "Responder",
    "Streamed",
    "chunks",
    "output_schema",
    "output_tool_name",
    "prompt_text",
    "purpose_of",
]
