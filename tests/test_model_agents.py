"""call_model's agents are built once per endpoint and output shape, and a different shape is a different agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from stakeflow.activities.models import ModelActivities
from stakeflow.activities.parameters import FrontierEndpoint, ModelParameters, OpenEndpoint
from stakeflow.agents.tools import CATALOGUE, constrained
from stakeflow.agents.types import ModelCallRequest, ModelEndpoint
from stakeflow.prices import PriceTable
from tests.fakes import FakeOpenAIServer, output_schema

PLAN = {"steps": [{"title": "Read the notes", "tool": "read_file", "stakes": "low"}]}


@pytest.fixture
def server():
    with FakeOpenAIServer(model="served-model") as s:
        yield s


def _step(paths: list[str], max_tokens: int = 256) -> ModelCallRequest:
    return ModelCallRequest(
        run_id="run-1",
        step=1,
        purpose="step",
        endpoint=ModelEndpoint(route="open", model="served-model"),
        system="You run one step.",
        prompt="Now step 1 of 1: read the notes.",
        tools=[constrained(CATALOGUE["read_file"].view(), paths)],
        max_output_tokens=max_tokens,
    )


def _models(tmp_path: Path, server: FakeOpenAIServer) -> ModelActivities:
    """call_model from its parameters alone, as a team's own worker builds it: no Settings."""
    return ModelActivities(
        ModelParameters(
            open=OpenEndpoint(
                url=server.url, model="served-model", api_key=None, dialect="vllm", timeout_s=30.0, embedded=False
            ),
            frontier=FrontierEndpoint(model="claude-sonnet-4-6", api_key=None, base_url=None, timeout_s=30.0),
            prices=PriceTable.from_config({}),
            traces_path=tmp_path / "traces.duckdb",
        )
    )


def _action(path: str) -> dict:
    return {"tool_calls": [{"tool": "read_file", "args": {"path": path}}], "result": "read it"}


async def test_calls_of_one_shape_share_an_agent_and_each_call_keeps_its_own_settings(tmp_path: Path, server):
    models = _models(tmp_path, server)
    server.enqueue(_action("a.txt"), _action("a.txt"))
    first = await models.call_model(_step(["a.txt", "b.txt"], max_tokens=100))
    second = await models.call_model(_step(["a.txt", "b.txt"], max_tokens=200))
    assert len(models._agents) == 1
    assert [r.body.get("max_completion_tokens", r.body.get("max_tokens")) for r in server.calls] == [100, 200]
    assert first.action == second.action and first.action.tool_calls[0].args == {"path": "a.txt"}
    await models.close()


async def test_another_workspace_enum_is_another_agent_and_its_schema_holds(tmp_path: Path, server):
    models = _models(tmp_path, server)
    server.enqueue(_action("a.txt"), _action("c.txt"))
    await models.call_model(_step(["a.txt", "b.txt"]))
    result = await models.call_model(_step(["c.txt"]))
    assert len(models._agents) == 2
    enums = [str(output_schema(r.body)) for r in server.calls]
    assert "b.txt" in enums[0] and "b.txt" not in enums[1] and "c.txt" in enums[1]
    assert result.action.tool_calls[0].args == {"path": "c.txt"}
    await models.close()


async def test_plan_step_and_answer_are_three_agents(tmp_path: Path, server):
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
    assert len(models._agents) == 3
    await models.close()
    assert len(models._agents) == 0
