"""call_model's request shapes are built once per endpoint and output shape (a different shape is a different one), and
call_model asks its model directly, validating the output as pydantic-ai's Agent did."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_ai import Agent
from temporalio.exceptions import ApplicationError

from stakeflow.activities.models import ModelActivities
from stakeflow.agents.tools import CATALOGUE, constrained
from stakeflow.agents.types import Dialect, ModelCallRequest, ModelEndpoint
from stakeflow.core.errors import MODEL_OUTPUT_INVALID
from tests.fakes import FakeOpenAIServer, Reply, output_schema
from tests.support import model_activities

PLAN = {"steps": [{"title": "Read the notes", "tool": "read_file", "stakes": "low"}]}


@pytest.fixture
def server():
    with FakeOpenAIServer(model="served-model") as s:
        yield s


def _step(paths: list[str], max_tokens: int = 256, tool: str = "read_file") -> ModelCallRequest:
    return ModelCallRequest(
        run_id="run-1",
        step=1,
        purpose="step",
        endpoint=ModelEndpoint(route="open", model="served-model"),
        system="You run one step.",
        prompt=f"Now step 1 of 1: use {tool}.",
        tools=[constrained(CATALOGUE[tool].view(), paths)],
        max_output_tokens=max_tokens,
    )


def _models(tmp_path: Path, server: FakeOpenAIServer, dialect: Dialect = "vllm") -> ModelActivities:
    return model_activities(tmp_path, server.url, dialect)


def _action(path: str) -> dict:
    return {"tool_calls": [{"tool": "read_file", "args": {"path": path}}], "result": "read it"}


async def test_calls_of_one_shape_share_it_and_each_call_keeps_its_own_settings(tmp_path: Path, server):
    models = _models(tmp_path, server)
    server.enqueue(_action("a.txt"), _action("a.txt"))
    first = await models.call_model(_step(["a.txt", "b.txt"], max_tokens=100))
    second = await models.call_model(_step(["a.txt", "b.txt"], max_tokens=200))
    assert len(models._shapes) == 1
    assert [r.body.get("max_completion_tokens", r.body.get("max_tokens")) for r in server.calls] == [100, 200]
    assert first.action == second.action and first.action.tool_calls[0].args == {"path": "a.txt"}
    await models.close()


async def test_another_workspace_enum_is_another_shape_and_its_schema_holds(tmp_path: Path, server):
    models = _models(tmp_path, server)
    server.enqueue(_action("a.txt"), _action("c.txt"))
    await models.call_model(_step(["a.txt", "b.txt"]))
    result = await models.call_model(_step(["c.txt"]))
    assert len(models._shapes) == 2
    enums = [str(output_schema(r.body)) for r in server.calls]
    assert "b.txt" in enums[0] and "b.txt" not in enums[1] and "c.txt" in enums[1]
    assert result.action.tool_calls[0].args == {"path": "c.txt"}
    await models.close()


async def test_plan_step_and_answer_are_three_shapes(tmp_path: Path, server):
    models = _models(tmp_path, server)
    server.enqueue(PLAN, _action("a.txt"), "the answer")
    plan = ModelCallRequest(
        purpose="plan",
        endpoint=ModelEndpoint(route="open", model="served-model"),
        system="Plan.",
        prompt="Read the notes.",
        tools=[CATALOGUE["read_file"].view()],
    )
    answer = ModelCallRequest(
        purpose="answer",
        endpoint=ModelEndpoint(route="open", model="served-model"),
        system="Answer.",
        prompt="What did the notes say?",
    )
    assert (await models.call_model(plan)).plan.steps[0].tool == "read_file"
    await models.call_model(_step(["a.txt"]))
    assert (await models.call_model(answer)).text == "the answer"
    assert len(models._shapes) == 3
    await models.close()
    assert len(models._shapes) == 0


async def test_call_model_runs_no_agent(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch):
    """A call is one direct model request: building or running a pydantic-ai Agent (its graph, capabilities and
    run context cost more CPU per call than the HTTP client) is not part of it."""

    def no_agent(*args, **kwargs):
        raise AssertionError("call_model built a pydantic-ai Agent")

    monkeypatch.setattr(Agent, "__init__", no_agent)
    models = _models(tmp_path, server)
    server.enqueue(_action("a.txt"))
    result = await models.call_model(_step(["a.txt"]))
    assert result.action.tool_calls[0].args == {"path": "a.txt"}
    await models.close()


@pytest.mark.parametrize(
    "text",
    [
        '```json\n{"tool_calls": [{"tool": "read_file", "args": {"path": "a.txt"}}], "result": "r"}\n```',
        'Here it is:\n```\n{"tool_calls": [{"tool": "read_file", "args": {"path": "a.txt"}}], "result": "r"}```',
    ],
)
async def test_fenced_json_is_taken_from_its_fence(tmp_path: Path, server, text: str):
    """As pydantic-ai's output validation does: a model may fence its JSON."""
    models = _models(tmp_path, server)
    server.enqueue(Reply.raw(text))
    result = await models.call_model(_step(["a.txt"]))
    assert result.action.tool_calls[0].args == {"path": "a.txt"}
    await models.close()


async def test_whitespace_and_prose_are_invalid_and_an_answer_keeps_its_spaces(tmp_path: Path, server):
    models = _models(tmp_path, server)
    server.enqueue(Reply.raw("   "), Reply.raw('Sure: {"tool_calls": []}'), Reply.raw("  the answer  "))
    reasons = []
    for _ in range(2):
        with pytest.raises(ApplicationError) as info:
            await models.call_model(_step(["a.txt"]))
        assert info.value.type == MODEL_OUTPUT_INVALID
        reasons.append(info.value.message)
    answer = ModelCallRequest(
        purpose="answer", endpoint=ModelEndpoint(route="open", model="served-model"), system="Answer.", prompt="Go."
    )
    assert (await models.call_model(answer)).text == "  the answer  "
    assert reasons == [
        "open model output failed validation: not valid JSON (EOF while parsing a value at line 1 column 3)",
        "open model output failed validation: not valid JSON (expected value at line 1 column 1)",
    ]
    await models.close()


def _strings(schema: object, found: list[dict] | None = None) -> list[dict]:
    """Every string schema in ``schema``."""
    found = [] if found is None else found
    if isinstance(schema, dict):
        if schema.get("type") == "string":
            found.append(schema)
        for v in schema.values():
            _strings(v, found)
    elif isinstance(schema, list):
        for v in schema:
            _strings(v, found)
    return found


async def test_llamacpp_grammar_ends_every_free_string_within_the_token_limit(tmp_path: Path, server):
    """SmolLM2 wrote a step's note until the output limit cut its JSON (tests/fixtures/model_requests/
    note_without_end.json): on llama.cpp every free string is bounded to a third of the call's token limit; a
    string with an enum or a pattern keeps its own bound, the prompt's schema is unchanged, vLLM's too."""
    write = _step(["a.txt"], max_tokens=300, tool="write_file")
    action = {"tool_calls": [{"tool": "write_file", "args": {"path": "a.txt", "content": "42"}}], "result": "done"}
    llamacpp, vllm = _models(tmp_path, server, "llamacpp"), _models(tmp_path, server, "vllm")
    server.enqueue(action, action, action)
    await llamacpp.call_model(write)
    await llamacpp.call_model(write.model_copy(update={"max_output_tokens": 600}))  # another bound, another shape
    await vllm.call_model(write)
    small, large, free = [output_schema(c.body) for c in server.calls]
    bounded = {tuple(sorted(k for k in s if k != "description")) for s in _strings(small)}
    assert bounded == {("maxLength", "title", "type"), ("const", "title", "type")}, bounded  # the path: one file
    assert {s["maxLength"] for s in _strings(small) if "maxLength" in s} == {100}  # the note and the content
    assert {s["maxLength"] for s in _strings(large) if "maxLength" in s} == {200}
    assert not any("maxLength" in s for s in _strings(free))
    assert "maxLength" not in server.calls[0].body["messages"][0]["content"]  # the prompt shows the model's own schema
    await llamacpp.close()
    await vllm.close()
