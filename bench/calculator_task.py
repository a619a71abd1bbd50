"""The task bench/overhead.py runs three ways, and what each way needs: the pydantic-ai agents and workflow of (a) and
(b), the Temporal floor's workflow, the scripted model for each (tests/fakes' FakeOpenAIServer) and the sandbox they
run in. bench/concurrency.py and bench/segments.py run the same task.

The task: compute the first N multiples of 7, one ``calculator`` call each, then answer with all of them.
"""

from __future__ import annotations

import re
import sys
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from openai import AsyncOpenAI
from pydantic_ai import Agent
from pydantic_ai.durable_exec.temporal import PydanticAIWorkflow, TemporalDurability
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from stakeflow.activities.tools import calculate
from stakeflow.config import Settings
from tests.agent_script import agent, call, plan
from tests.fakes import Reply

MODEL_NAME = "fake-open-model"
PYDANTIC_AI_QUEUE = "bench-pydantic-ai"

# --- (a) and (b): one pydantic-ai agent definition --------------------------------------------------

# The fake server's port is only known once it runs, so the client starts with a placeholder address
# and main() points it at the server. The agent must exist at import time: TemporalDurability registers
# its activities from the agent, and the agent must be built outside workflow code.
OPENAI = AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="none", max_retries=0)
HTTP_MODEL = OpenAIChatModel(MODEL_NAME, provider=OpenAIProvider(openai_client=OPENAI))


async def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly."""
    return calculate(expression)  # stakeflow's own calculator, so the tool costs the same everywhere


durable_agent = Agent(HTTP_MODEL, name="bench_agent", tools=[calculator], capabilities=[TemporalDurability()])
plain_agent = Agent(HTTP_MODEL, name="bench_plain", tools=[calculator])


def task_prompt(steps: int) -> str:
    return f"Compute the first {steps} multiples of 7, one calculator call each."


def task_answer(steps: int) -> str:
    """The scripted answer: every figure in it is a calculator result, so the answer check passes first time."""
    return "The multiples are " + ", ".join(str(7 * i) for i in range(1, steps + 1)) + "."


def _steps_in(messages: list[ModelMessage]) -> int:
    for m in messages:
        if isinstance(m, ModelRequest):
            for p in m.parts:
                if isinstance(p, UserPromptPart) and isinstance(p.content, str):
                    found = re.search(r"first (\d+) multiples", p.content)
                    if found:
                        return int(found.group(1))
    raise ValueError("no step count in the prompt")


def _scripted(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """The FunctionModel twin of the fake server's script: calculator until every step ran, then answer."""
    done = tool_returns(messages)
    if done < _steps_in(messages):
        return ModelResponse(parts=[ToolCallPart("calculator", {"expression": f"{done + 1}*7"})])
    return ModelResponse(parts=[TextPart(task_answer(_steps_in(messages)))])


# (a0) and (b0): the same agents with an in-process FunctionModel, to show what the HTTP hop costs.
_FUNCTION_MODEL = FunctionModel(_scripted)
plain_function_agent = Agent(_FUNCTION_MODEL, name="bench_plain_function", tools=[calculator])
durable_function_agent = Agent(
    _FUNCTION_MODEL, name="bench_function", tools=[calculator], capabilities=[TemporalDurability()]
)


@dataclass
class BenchParams:
    """Input of BenchPydanticAIWorkflow."""

    prompt: str = ""
    function_model: bool = False


@workflow.defn(name="BenchPydanticAIWorkflow")
class BenchPydanticAIWorkflow(PydanticAIWorkflow):
    """(b): pydantic-ai's durable agent, one agent run per workflow."""

    __pydantic_ai_agents__ = (durable_agent, durable_function_agent)

    @workflow.run
    async def run(self, params: BenchParams) -> str:
        agent = durable_function_agent if params.function_model else durable_agent
        result = await agent.run(params.prompt)
        return result.output


# --- the Temporal floor: the same activity shapes with no work in them ---------------------------------

FLOOR_QUEUE = "bench-floor"
FLOOR_ACTIVITY_QUEUE = "bench-floor-activities"


@activity.defn(name="bench_noop")
async def noop_activity(step: int) -> int:
    return step


@dataclass
class FloorParams:
    """Input of BenchFloorWorkflow: ``shape`` "b" (2 regular activities per step on the workflow's own
    queue, as TemporalDurability runs them), "c" (stakeflow's: plan, then per step 1 regular activity on
    another queue + 1 local activity, then answer) or "cl" (stakeflow's with ``[workers] local_model_calls``:
    every one of them a local activity)."""

    steps: int = 10
    shape: str = "c"


@workflow.defn(name="BenchFloorWorkflow")
class BenchFloorWorkflow:
    """What the orchestration alone costs: no model, no tool, empty payloads."""

    @workflow.run
    async def run(self, params: FloorParams) -> int:
        regular = {"start_to_close_timeout": timedelta(seconds=30)}
        if params.shape == "b":
            for i in range(params.steps):
                await workflow.execute_activity(noop_activity, i, **regular)
                await workflow.execute_activity(noop_activity, i, **regular)
            await workflow.execute_activity(noop_activity, params.steps, **regular)
            return params.steps
        other = {**regular, "task_queue": FLOOR_ACTIVITY_QUEUE}
        local = {"start_to_close_timeout": timedelta(seconds=30)}

        async def model_call(i: int) -> None:
            if params.shape == "cl":
                await workflow.execute_local_activity(noop_activity, i, **local)
            else:
                await workflow.execute_activity(noop_activity, i, **other)

        await model_call(0)
        for i in range(params.steps):
            await model_call(i)
            await workflow.execute_local_activity(noop_activity, i, **local)
        await model_call(params.steps)
        return params.steps


def floor_workers(client: Client) -> list[Worker]:
    """The floor's workers: its workflow (on Temporal's sandbox, as (b)'s runs) and the no-op activities, on the
    workflow's queue and on the other queue (the shape of (c)'s call_model)."""
    return [
        Worker(
            client,
            task_queue=FLOOR_QUEUE,
            workflows=[BenchFloorWorkflow],
            activities=[noop_activity],
            workflow_runner=bench_runner(),
        ),
        Worker(client, task_queue=FLOOR_ACTIVITY_QUEUE, activities=[noop_activity]),
    ]


def stakeflow_settings(tmp: Path, url: str) -> Settings:
    """(c)'s settings: a home in ``tmp``, queues of their own, the scripted model at ``url`` spoken to as vLLM."""
    return Settings(
        home=tmp / "home",
        queue_prefix=f"bench{uuid.uuid4().hex[:6]}",
        open_base_url=url,
        open_model=MODEL_NAME,
        open_dialect="vllm",
    )


def pydantic_ai_responder(steps: int):
    """The fake model for (a)/(b): ask for ``calculator`` until ``steps`` tool results came back, then answer."""

    def respond(body: dict[str, Any]) -> Any:
        done = sum(1 for m in body.get("messages") or [] if m.get("role") == "tool")
        if done < steps:
            return Reply(tool_call=("calculator", {"expression": f"{done + 1}*7"}))
        return task_answer(steps)

    return respond


def stakeflow_responder(steps: int):
    """The fake model for (c): a plan of ``steps`` calculator steps, each step one call, then the answer."""
    the_plan = plan(*[(f"Compute {i}*7", "calculator") for i in range(1, steps + 1)])
    actions = {i: call("calculator", f"computed {i}*7", expression=f"{i}*7") for i in range(1, steps + 1)}
    return agent(the_plan, actions, answer=task_answer(steps))


def bench_runner(*also: str) -> SandboxedWorkflowRunner:
    """The default sandbox, with this module (and the benchmark modules in ``also``) passed through.

    Otherwise the sandbox would re-execute this whole file (agents, fake server class, ...) at the
    start of every (b) and floor run, a cost of this benchmark's layout, not of pydantic-ai. So (b)
    gets its best case. stakeflow's own workers pass its workflow modules through too (stakeflow/temporal/sandbox.py).
    """
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(__name__, *also))


def tool_returns(messages: list[ModelMessage]) -> int:
    """How many tool results a pydantic-ai run's messages hold."""
    return sum(1 for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, ToolReturnPart))
