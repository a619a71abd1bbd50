"""What one model call sends before its prompt: the worked examples as earlier turns, and a step's earlier rounds
as the conversation the next round continues (issue 22's agent loop).

The open route speaks the structured-output form its dialect decodes (a round's action as the assistant's JSON,
its results as the next user turn); the frontier answers through its output tool (pydantic-ai's ``ToolOutput``),
so a round goes back to it as that tool's call and result: the Messages API's own tool_use / tool_result turns.
Stable parts come first (system, examples, the step's prompt), then the rounds: what a prompt cache reuses.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)

from stakeflow.agents.prompts import round_results
from stakeflow.agents.types import ModelCallRequest


def example_history(req: ModelCallRequest) -> list[ModelMessage]:
    """The request's worked examples as earlier turns, the system prompt leading the first.

    pydantic-ai sends the agent's system prompt only when there is no history, so it goes in here.
    """
    history: list[ModelMessage] = []
    for n, turn in enumerate(req.examples):
        parts: list[Any] = [SystemPromptPart(req.system)] if n == 0 and req.system else []
        history.append(ModelRequest(parts=[*parts, UserPromptPart(turn.prompt)]))
        history.append(ModelResponse(parts=[TextPart(turn.answer)]))
    return history


# The frontier answers through a tool call whose arguments are the output (pydantic-ai's ToolOutput): a step's
# earlier rounds go back to it as that call and its result, the Messages API's own tool_use / tool_result turns.
OUTPUT_TOOL = "final_result"


def round_history(req: ModelCallRequest, *, first: bool) -> list[ModelMessage]:
    """The step's prompt and its earlier rounds as the conversation the next round continues.

    Open route: each round's action is the assistant's JSON (the structured-output form the open dialects
    decode), its results the next user turn. Frontier: each action is a call of the output tool and its
    results that call's return, so the model sees its own tool use answered. ``first``: no earlier turn
    carries the system prompt (pydantic-ai sends it only when there is no history).
    """
    parts: list[Any] = [SystemPromptPart(req.system)] if first and req.system else []
    messages: list[ModelMessage] = [ModelRequest(parts=[*parts, UserPromptPart(req.prompt)])]
    for n, turn in enumerate(req.rounds, start=1):
        action = turn.action.model_dump(mode="json", exclude_defaults=False)
        if req.endpoint.route == "frontier":
            call_id = f"round-{n}"
            messages.append(ModelResponse(parts=[ToolCallPart(OUTPUT_TOOL, action, tool_call_id=call_id)]))
            messages.append(
                ModelRequest(parts=[ToolReturnPart(OUTPUT_TOOL, round_results(turn), tool_call_id=call_id)])
            )
        else:
            messages.append(ModelResponse(parts=[TextPart(json.dumps(action, ensure_ascii=False))]))
            messages.append(ModelRequest(parts=[UserPromptPart(round_results(turn))]))
    return messages
