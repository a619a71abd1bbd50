"""The open route's client and model (activities/open_chat.py): a request goes out exactly as the openai SDK's
``create`` would send it, without the SDK's per-call parameter transform, and each shape's request parameters are
customized for the model once."""

from __future__ import annotations

import os
from pathlib import Path

import pydantic_ai.models
import pytest
from openai import AsyncOpenAI
from openai.resources.chat.completions import completions as sdk_completions

from stakeflow.activities import models as models_module
from stakeflow.activities.models import ModelActivities
from stakeflow.activities.open_chat import OpenRouteClient
from stakeflow.agents.tools import CATALOGUE
from stakeflow.agents.types import (
    Dialect,
    ExampleTurn,
    ModelCallRequest,
    ModelEndpoint,
    RoundTurn,
    StepAction,
    ToolCall,
    ToolResult,
)
from tests.agent_script import call, plan
from tests.fakes import FakeOpenAIServer
from tests.support import model_activities

OPEN_KEY = "open-endpoint-key"


@pytest.fixture
def server():
    with FakeOpenAIServer(model="served-model") as s:
        yield s


def _models(tmp_path: Path, server: FakeOpenAIServer, dialect: Dialect) -> ModelActivities:
    return model_activities(tmp_path, server.url, dialect, api_key=OPEN_KEY)


def _requests() -> list[ModelCallRequest]:
    """A plan, a step in its second round with a worked example, an answer and a streamed answer."""
    endpoint = ModelEndpoint(route="open", model="served-model")
    tool = CATALOGUE["calculator"].view()
    action = StepAction(tool_calls=[ToolCall(tool="calculator", args={"expression": "6*7"})], result="multiplied")
    return [
        ModelCallRequest(purpose="plan", endpoint=endpoint, system="Plan.", prompt="Compute 6*7.", tools=[tool]),
        ModelCallRequest(
            purpose="step",
            step=1,
            round=2,
            endpoint=endpoint,
            system="You run one step.",
            prompt="Now step 1 of 1: compute 6*7 — “quoted”, naïve.",
            examples=[ExampleTurn(prompt="Compute 2*3", answer='{"tool_calls": [], "result": "6"}')],
            rounds=[RoundTurn(action=action, results=[ToolResult(tool="calculator", ok=True, output="42")])],
            tools=[tool],
            max_output_tokens=300,
        ),
        ModelCallRequest(purpose="answer", endpoint=endpoint, system="Answer.", prompt="What is 6*7?"),
        ModelCallRequest(purpose="answer", endpoint=endpoint, system="Answer.", prompt="What is 6*7?", stream=True),
    ]


def _responder(body: dict) -> object:
    """Plays each call by its system prompt (the first message's: the worked example's turn carries it too)."""
    system = body["messages"][0]["content"]
    if system.startswith("Plan."):
        return plan(("Compute 6*7", "calculator"))
    if system.startswith("Answer."):
        return "It is 42."
    return call("calculator", "multiplied", expression="6*7")


@pytest.mark.parametrize("dialect", ["vllm", "openai", "llamacpp"])
async def test_each_request_goes_out_as_the_sdk_sends_it(
    tmp_path: Path, server: FakeOpenAIServer, dialect: Dialect, monkeypatch: pytest.MonkeyPatch
):
    """Every purpose, streamed or not, in each dialect, three times over (the third time through the aiohttp sender,
    open_transport.py): the same body, headers and result through the SDK's ``create`` and through OpenRouteClient.
    OPENAI_ADMIN_KEY in the environment goes to neither."""
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin-never-sent")
    for name in [k for k in os.environ if k.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)  # the sender is off with a proxy in the environment
    server.script(_responder)
    fast = _models(tmp_path, server, dialect)
    results = [await fast.call_model(r) for r in _requests() * 3]
    sent = list(server.calls)
    sender = fast._open_client.sender if isinstance(fast._open_client, OpenRouteClient) else None
    assert sender is not None and len(sender._ready) == 2  # streamed and not
    await fast.close()
    monkeypatch.setattr(models_module, "OpenRouteClient", AsyncOpenAI)  # the SDK's own client, as before
    sdk = _models(tmp_path, server, dialect)
    expected = [await sdk.call_model(r) for r in _requests() * 3]
    assert isinstance(sdk._open_client, AsyncOpenAI) and not isinstance(sdk._open_client, OpenRouteClient)
    await sdk.close()
    by_sdk = server.calls[len(sent) :]
    assert len(sent) == len(by_sdk) == 12
    for ours, theirs in zip(sent, by_sdk, strict=True):
        assert ours.path == theirs.path
        assert ours.body == theirs.body
        assert ours.headers == theirs.headers
        assert ours.headers["authorization"] == f"Bearer {OPEN_KEY}"
        assert "sk-admin-never-sent" not in str(ours.headers)
    assert [c.body.get("stream", False) for c in sent] == [False, False, False, True] * 3
    for mine, theirs in zip(results, expected, strict=True):
        assert mine.model_dump(exclude={"latency_ms", "cost"}) == theirs.model_dump(exclude={"latency_ms", "cost"})
    assert results[0].plan is not None and results[1].action is not None and results[11].text == "It is 42."


async def test_a_call_model_runs_no_sdk_transform_and_customizes_its_shape_once(
    tmp_path: Path, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
):
    """The two per-call costs taken out (activities/open_chat.py): the SDK's parameter transform, and pydantic-ai's
    customization of the same request parameters for the same model on every call."""
    transforms: list[object] = []
    real_transform = sdk_completions.async_maybe_transform

    async def counted(data, expected_type):
        transforms.append(expected_type)
        return await real_transform(data, expected_type)

    customized: list[object] = []
    real_customize = pydantic_ai.models._customize_output_object

    def counted_customize(transformer, output_object):
        customized.append(output_object)
        return real_customize(transformer, output_object)

    monkeypatch.setattr(sdk_completions, "async_maybe_transform", counted)
    monkeypatch.setattr(pydantic_ai.models, "_customize_output_object", counted_customize)
    server.script(_responder)
    models = _models(tmp_path, server, "vllm")
    step = _requests()[1]
    for _ in range(3):
        assert (await models.call_model(step)).action is not None
    await models.close()
    assert transforms == []
    assert len(customized) == 1


async def test_parameters_that_are_not_plain_json_go_through_the_sdk(server: FakeOpenAIServer):
    """A tuple of messages (an iterable the SDK's transform makes a list) is sent by the SDK's own ``create``."""
    server.enqueue("hello")
    client = OpenRouteClient(base_url=server.url, api_key=OPEN_KEY, max_retries=0)
    messages = ({"role": "user", "content": "hi"},)
    completion = await client.chat.completions.create(model="served-model", messages=messages)
    await client.close()
    assert completion.choices[0].message.content == "hello"
    assert server.calls[0].body["messages"] == [{"role": "user", "content": "hi"}]
