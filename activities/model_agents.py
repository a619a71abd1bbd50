"""The pydantic-ai agents of ``call_model``, built once per endpoint and output shape instead of once per call.

Building an Agent means building its output type (``create_model`` of the plan or step output, one model
per allowed tool), the output schema and its JSON schema: with 100 runs in flight that was ~10% of the
worker's CPU (bench/README.md, "concurrency.py"), for results that depend only on what the key below
holds. An agent holds no per-run state, so one serves concurrent calls.

The key is everything the agent and its model settings are built from: the route and model, the
purpose, the system prompt, and for plans and steps every allowed tool's name, description and argument
schema (a step's schema carries the enum of the run's workspace files, so two workspaces are two keys),
plus the plan's step limit and first-step tools. Bounded: the least recently used agent goes first.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.models import Model
from pydantic_ai.settings import ModelSettings

from stakeflow.agents.types import ModelCallRequest

MAX_AGENTS = 512

OutputSpec = Callable[[ModelCallRequest], tuple[Any, ModelSettings]]


def agent_key(req: ModelCallRequest, model: Model) -> tuple:
    """What the call's agent and model settings depend on (not the prompt, not the per-call token limit)."""
    shape: tuple = ()
    if req.purpose in ("plan", "replan", "step"):
        tools = tuple((t.name, t.description, json.dumps(t.args_schema, sort_keys=True)) for t in req.tools)
        shape = (
            (tools, req.max_steps, tuple(req.first_step_tools))
            if req.purpose != "step"
            else (tools, req.require_tool_call)
        )
    return (req.endpoint.route, model.model_name, id(model), req.purpose, req.system, shape)


class AgentCache:
    """Agents and their model settings by ``agent_key``; ``get`` builds one with ``output_spec`` on a miss."""

    def __init__(self, output_spec: OutputSpec, size: int = MAX_AGENTS) -> None:
        self._output_spec = output_spec
        self._size = size
        self._agents: OrderedDict[tuple, tuple[Agent, ModelSettings]] = OrderedDict()

    def get(self, req: ModelCallRequest, model: Model) -> tuple[Agent, ModelSettings]:
        """The agent for ``req`` on ``model``, and this call's model settings (its own dict)."""
        key = agent_key(req, model)
        found = self._agents.get(key)
        if found is None:
            output_type, settings = self._output_spec(req)
            found = (Agent(model, output_type=output_type, system_prompt=req.system or (), retries=0), settings)
            self._agents[key] = found
            if len(self._agents) > self._size:
                self._agents.popitem(last=False)
        else:
            self._agents.move_to_end(key)
        agent, settings = found
        return agent, {**settings, "max_tokens": req.max_output_tokens}

    def clear(self) -> None:
        self._agents.clear()

    def __len__(self) -> int:
        return len(self._agents)
