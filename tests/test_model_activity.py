"""The call_model activity, called directly against scripted OpenAI-compatible and Anthropic servers."""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from stakeflow.activities.models import ModelActivities
from stakeflow.activities.parameters import ModelParameters
from stakeflow.agents.tools import CATALOGUE
from stakeflow.agents.types import (
    CallFailure,
    ModelCallRequest,
    ModelEndpoint,
    Plan,
    PlannedStep,
    StepAction,
    ToolCall,
    Usage,
)
from stakeflow.config import Settings
from stakeflow.core.errors import MODEL_AUTH, MODEL_OUTPUT_INVALID, MODEL_REQUEST_REJECTED
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, Reply, output_schema, purpose_of

FRONTIER_KEY = "sk-ant-test-0123456789abcdef"
OPEN_KEY = "open-key-0123456789"
PLAN = {
    "steps": [
        {"title": "Read the notes", "tool": "read_file", "stakes": "low"},
        {"title": "Add the totals", "tool": "calculator", "stakes": "low"},
        {"title": "Summarise", "tool": None, "stakes": "low"},
    ]
}


@pytest.fixture(autouse=True)
def no_model_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's keys or endpoints (Settings reads the environment)."""
    for name in list(os.environ):
        if name.startswith(("STAKEFLOW_", "ANTHROPIC_", "OPENAI_")):
            monkeypatch.delenv(name)


@pytest.fixture
def open_server():
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def anthropic_server():
    with FakeAnthropicServer() as server:
        yield server


def open_settings(tmp_path: Path, server: FakeOpenAIServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"open_base_url": server.url, "open_model": "served-model"}
    return Settings(home=tmp_path, **{**values, **overrides})


def frontier_settings(tmp_path: Path, server: FakeAnthropicServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "anthropic_api_key": FRONTIER_KEY,
        "anthropic_base_url": server.url,
        "frontier_model": "claude-test-1",
    }
    return Settings(home=tmp_path, **{**values, **overrides})


def tools(*names: str) -> list:
    return [CATALOGUE[n].view() for n in names]


def request(purpose: str = "plan", route: str = "open", **overrides: Any) -> ModelCallRequest:
    values: dict[str, Any] = {
        "run_id": "run-1",
        "purpose": purpose,
        "endpoint": ModelEndpoint(route=route),
        "system": "You are the planner.",
        "prompt": "Add up the numbers in notes.txt.",
        "tools": tools("read_file", "calculator") if purpose == "plan" else tools("write_file"),
        "max_steps": 3,
        "max_output_tokens": 256,
    }
    return ModelCallRequest(**{**values, **overrides})


async def call(settings: Settings, req: ModelCallRequest) -> Any:
    activities = ModelActivities(ModelParameters.from_settings(settings))
    try:
        return await activities.call_model(req)
    finally:
        await activities.close()


async def call_error(settings: Settings, req: ModelCallRequest) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await call(settings, req)
    return info.value


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- open route: request shape per dialect --------------------------------------------------


async def test_llamacpp_plan_sends_json_object_with_schema(tmp_path: Path, open_server: FakeOpenAIServer) -> None:
    open_server.script(lambda body: PLAN)
    settings = open_settings(tmp_path, open_server, open_dialect="llamacpp")

    result = await call(settings, request("plan"))

    assert result.plan == Plan(steps=[PlannedStep(**s) for s in PLAN["steps"]])
    assert (result.route, result.model, result.action, result.text) == ("open", "served-model", None, None)
    [sent] = open_server.calls
    body = sent.body
    assert sent.path == "/v1/chat/completions"
    assert body["model"] == "served-model"
    assert body["max_tokens"] == 256 and "max_completion_tokens" not in body
    assert body["response_format"]["type"] == "json_object"
    schema = body["response_format"]["schema"]
    step = schema["$defs"]["PlannedStep"]
    assert step["properties"]["tool"]["anyOf"][0]["enum"] == ["read_file", "calculator"]
    assert (schema["properties"]["steps"]["minItems"], schema["properties"]["steps"]["maxItems"]) == (1, 3)
    assert "tools" not in body
    system = [m for m in body["messages"] if m["role"] == "system"]
    assert len(system) == 1 and system[0]["content"].startswith("You are the planner.")
    assert body["messages"][-1] == {"role": "user", "content": "Add up the numbers in notes.txt."}
    assert sent.headers["authorization"] == "Bearer none"


@pytest.mark.parametrize("dialect", [None, "openai"])  # None: vllm, the default for a configured URL
async def test_vllm_and_openai_plan_send_json_schema(
    tmp_path: Path, open_server: FakeOpenAIServer, dialect: str | None
) -> None:
    open_server.script(lambda body: PLAN)
    open_server.reported_model = "Qwen/Qwen3-8B-AWQ"  # what the server says it ran
    settings = open_settings(tmp_path, open_server, open_api_key=OPEN_KEY, open_dialect=dialect)
    assert settings.dialect == (dialect or "vllm")

    req = request("plan", endpoint=ModelEndpoint(route="open", model="Qwen/Qwen3-8B"), max_output_tokens=300)
    result = await call(settings, req)

    assert result.plan is not None and [s.tool for s in result.plan.steps] == ["read_file", "calculator", None]
    assert result.model == "Qwen/Qwen3-8B-AWQ"
    [sent] = open_server.calls
    body = sent.body
    assert body["model"] == "Qwen/Qwen3-8B"
    assert body["max_completion_tokens"] == 300
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Plan"
    assert fmt["json_schema"]["schema"]["properties"]["steps"]["maxItems"] == 3
    assert sent.headers["authorization"] == f"Bearer {OPEN_KEY}"


@pytest.mark.parametrize("dialect", ["llamacpp", "vllm"])
async def test_step_action_parsed_with_schema_args(tmp_path: Path, open_server: FakeOpenAIServer, dialect: str) -> None:
    action = {
        "tool_calls": [{"tool": "write_file", "args": {"path": "out.txt", "content": "42"}}],
        "result": "Writing the total.",
    }
    open_server.script(lambda body: action)
    settings = open_settings(tmp_path, open_server, open_dialect=dialect)

    result = await call(settings, request("step"))

    assert result.action == StepAction(
        tool_calls=[ToolCall(tool="write_file", args={"path": "out.txt", "content": "42", "append": False})],
        result="Writing the total.",
    )
    schema = output_schema(open_server.calls[0].body)
    assert schema is not None and purpose_of(open_server.calls[0].body) == "step"
    args = schema["$defs"]["WriteFileArgs"]
    assert set(args["required"]) >= {"path", "content"} and args["additionalProperties"] is False


async def test_llamacpp_raw_control_characters_in_strings_are_accepted(
    tmp_path: Path, open_server: FakeOpenAIServer
) -> None:
    # llama-cpp-python's grammar lets a raw newline into a JSON string; strict JSON would reject it.
    raw = '{"tool_calls": [{"tool": "write_file", "args": {"path": "a.txt", "content": "1\n2\t3"}}], "result": "ok"}'
    open_server.enqueue(Reply.raw(raw))

    result = await call(open_settings(tmp_path, open_server, open_dialect="llamacpp"), request("step"))

    assert result.action is not None and result.action.tool_calls[0].args["content"] == "1\n2\t3"


async def test_answer_is_plain_text(tmp_path: Path, open_server: FakeOpenAIServer) -> None:
    open_server.script(lambda body: "The total is 42.")
    settings = open_settings(tmp_path, open_server, open_dialect="llamacpp")

    result = await call(settings, request("answer", tools=[]))

    assert (result.text, result.plan, result.action) == ("The total is 42.", None, None)
    body = open_server.calls[0].body
    assert "response_format" not in body and "tools" not in body
    assert purpose_of(body) == "answer"


async def test_open_usage_excludes_cached_tokens_from_input(tmp_path: Path, open_server: FakeOpenAIServer) -> None:
    open_server.script(lambda body: PLAN)
    open_server.usage = {"prompt_tokens": 150, "completion_tokens": 30, "cached_tokens": 40}

    result = await call(open_settings(tmp_path, open_server), request("plan"))

    assert result.usage == Usage(input_tokens=110, output_tokens=30, cache_read_tokens=40, requests=1)
    assert result.latency_ms > 0


async def test_clients_are_reused_and_never_retry(tmp_path: Path, open_server: FakeOpenAIServer) -> None:
    open_server.enqueue(PLAN, Reply.error(500), PLAN)
    activities = ModelActivities(ModelParameters.from_settings(open_settings(tmp_path, open_server)))
    try:
        await activities.call_model(request("plan"))
        client = activities._open_client
        with pytest.raises(ApplicationError):
            await activities.call_model(request("plan"))
        await activities.call_model(request("plan"))
        assert activities._open_client is client
    finally:
        await activities.close()
    assert len(open_server.calls) == 3  # the 500 was tried once: Temporal owns retries


# --- invalid output -------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["llamacpp", "vllm"])
@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply.raw("{not json"), "not valid JSON"),
        (Reply.raw("Sure! Here is a plan: read the file."), "not valid JSON"),
        ({"steps": [{"title": "Fetch", "tool": "http_get", "stakes": "low"}]}, "steps.0.tool"),
        ({"steps": [PLAN["steps"][0]] * 4}, "steps: List should have at most 3 items"),
        ({"steps": []}, "steps: List should have at least 1 item"),
    ],
)
async def test_invalid_plan_is_non_retryable_output_invalid(
    tmp_path: Path, open_server: FakeOpenAIServer, dialect: str, reply: Any, reason: str
) -> None:
    open_server.enqueue(reply)
    open_server.usage = {"prompt_tokens": 90, "completion_tokens": 12, "cached_tokens": 0}

    error = await call_error(open_settings(tmp_path, open_server, open_dialect=dialect), request("plan"))

    assert (error.type, error.non_retryable) == (MODEL_OUTPUT_INVALID, True)
    assert error.message.startswith("open model output failed validation: ")
    assert reason in error.message
    failure = CallFailure.from_details(error.details)
    assert failure is not None and failure.usage == Usage(input_tokens=90, output_tokens=12, requests=1)
    assert len(open_server.calls) == 1  # no hidden output retry


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ({"tool_calls": [{"tool": "read_file", "args": {"path": "a"}}], "result": ""}, "tool_calls.0"),
        ({"tool_calls": [{"tool": "write_file", "args": {"path": "a"}}], "result": ""}, "content: Field required"),
        (
            {"tool_calls": [{"tool": "write_file", "args": {"path": "a", "content": "b", "mode": "x"}}], "result": ""},
            "mode: Extra inputs are not permitted",
        ),
    ],
)
async def test_invalid_step_action_is_output_invalid(
    tmp_path: Path, open_server: FakeOpenAIServer, action: dict, reason: str
) -> None:
    open_server.enqueue(action)

    error = await call_error(open_settings(tmp_path, open_server), request("step"))

    assert (error.type, error.non_retryable) == (MODEL_OUTPUT_INVALID, True)
    assert reason in error.message


@pytest.mark.parametrize(
    ("route", "reply", "reason"),
    [
        (
            "open",
            Reply.raw('{"steps": [{"title": "Rea', finish_reason="length"),
            "cut off at max_output_tokens=256 (not valid JSON",
        ),
        ("open", Reply.raw(""), "empty response"),
        (
            "frontier",
            Reply(tool_call=("final_result", {"steps": [{"title": "Read"}]}), finish_reason="max_tokens"),
            "cut off at max_output_tokens=256 (steps.0.tool: Field required",
        ),
        (
            "frontier",
            Reply(tool_call=("http_get", {"url": "https://example.com"})),
            "called http_get instead of answering",
        ),
    ],
)
async def test_invalid_output_reason_says_what_the_model_did(
    tmp_path: Path,
    open_server: FakeOpenAIServer,
    anthropic_server: FakeAnthropicServer,
    route: str,
    reply: Reply,
    reason: str,
) -> None:
    open_server.enqueue(reply)
    anthropic_server.enqueue(reply)
    settings = open_settings(
        tmp_path,
        open_server,
        anthropic_api_key=FRONTIER_KEY,
        anthropic_base_url=anthropic_server.url,
        frontier_model="claude-test-1",
    )

    error = await call_error(settings, request("plan", route=route))

    assert (error.type, error.non_retryable) == (MODEL_OUTPUT_INVALID, True)
    assert error.message.startswith(f"{route} model output failed validation: {reason}")


# --- frontier route -------------------------------------------------------------------------


async def test_frontier_plan_uses_output_tool_and_key(tmp_path: Path, anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script(lambda body: PLAN)
    anthropic_server.usage = {
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_creation_input_tokens": 7,
        "cache_read_input_tokens": 50,
    }

    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        result = await call(frontier_settings(tmp_path, anthropic_server), request("plan", route="frontier"))

    # The API version the anthropic client sends (2026-10-21) takes no sampling settings: none is set, so pydantic-ai
    # has none to drop with a warning on every frontier call.
    assert not [w for w in warned if "Sampling parameters" in str(w.message)]
    assert result.plan == Plan(steps=[PlannedStep(**s) for s in PLAN["steps"]])
    assert (result.route, result.model) == ("frontier", "claude-test-1")
    assert result.usage == Usage(
        input_tokens=100, output_tokens=20, cache_read_tokens=50, cache_write_tokens=7, requests=1
    )
    [sent] = anthropic_server.calls
    assert sent.path == "/v1/messages"
    assert sent.api_key == FRONTIER_KEY
    body = sent.body
    assert (body["model"], body["max_tokens"]) == ("claude-test-1", 256)
    assert "temperature" not in body
    # The system prompt is a block with a cache breakpoint: it caches the output tool's schema before it too.
    assert body["system"] == [
        {"type": "text", "text": "You are the planner.", "cache_control": {"type": "ephemeral", "ttl": "5m"}}
    ]
    [tool] = body["tools"]
    assert tool["name"] == "final_result"
    assert body["tool_choice"]["type"] in ("any", "tool")
    step = tool["input_schema"]["$defs"]["PlannedStep"]
    assert step["properties"]["tool"]["anyOf"][0]["enum"] == ["read_file", "calculator"]


async def test_frontier_step_and_answer(tmp_path: Path, anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.enqueue(
        {
            "tool_calls": [{"tool": "write_file", "args": {"path": "a.txt", "content": "x", "append": True}}],
            "result": "done",
        },
        "All done.",
    )
    settings = frontier_settings(tmp_path, anthropic_server)
    req = request("step", route="frontier", endpoint=ModelEndpoint(route="frontier", model="claude-other"))

    step = await call(settings, req)
    answer = await call(settings, request("answer", route="frontier", tools=[]))

    assert step.action is not None and step.action.tool_calls[0].args == {
        "path": "a.txt",
        "content": "x",
        "append": True,
    }
    assert step.model == "claude-other" and anthropic_server.calls[0].body["model"] == "claude-other"
    assert answer.text == "All done."
    assert "tools" not in anthropic_server.calls[1].body


async def test_frontier_without_key_is_auth_error(tmp_path: Path, anthropic_server: FakeAnthropicServer) -> None:
    settings = frontier_settings(tmp_path, anthropic_server, anthropic_api_key=None)

    error = await call_error(settings, request("plan", route="frontier"))

    assert (error.type, error.non_retryable) == (MODEL_AUTH, True)
    assert error.message == "ANTHROPIC_API_KEY is not set on this worker: export it, or run with --stakes low"
    assert anthropic_server.calls == []


# --- a candidate's server (`stakeflow evals replay --base-url`) -------------------------------


async def test_a_candidate_url_never_receives_the_open_models_key(
    tmp_path: Path, open_server: FakeOpenAIServer
) -> None:
    """Issue 20 §5: the key goes only to the endpoint it was configured for."""
    open_server.script(lambda body: "configured")
    with FakeOpenAIServer(responder=lambda body: "candidate") as candidate:
        settings = open_settings(tmp_path, open_server, open_api_key=OPEN_KEY)
        await call(settings, request("answer", endpoint=ModelEndpoint(route="open", base_url=candidate.url)))
        await call(settings, request("answer", endpoint=ModelEndpoint(route="open", base_url=open_server.url + "/")))
    assert len(candidate.calls) == 1 and OPEN_KEY not in str(candidate.calls[0].headers)
    assert open_server.calls[0].headers["authorization"] == f"Bearer {OPEN_KEY}"  # the configured one, spelled alike


@pytest.mark.parametrize(
    "url, why",
    [
        ("file:///etc/passwd", "http:// or https://"),
        ("ftp://models.example/v1", "http:// or https://"),
        ("http://user:secret@models.example/v1", "credentials"),
        ("http:///v1", "no host"),
        ("http://models.example/v1?key=1", "query"),
    ],
)
async def test_a_candidate_url_is_checked_before_anything_is_sent(
    tmp_path: Path, open_server: FakeOpenAIServer, url: str, why: str
) -> None:
    error = await call_error(
        open_settings(tmp_path, open_server), request("answer", endpoint=ModelEndpoint(base_url=url))
    )
    assert (error.type, error.non_retryable) == (MODEL_REQUEST_REJECTED, True)
    assert why in error.message and "--base-url" in error.message
    assert "secret" not in error.message
    assert open_server.calls == []
