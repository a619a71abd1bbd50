"""The messages of one model call: the system prompt, the worked examples (open route), the prompt, and a step's
earlier rounds as the conversation the next round continues (issue 22's agent loop).

The open route speaks the structured-output form its dialect decodes (a round's action as the assistant's JSON,
its results as the next user turn); the frontier answers through its output tool (``OUTPUT_TOOL``), so a round
goes back to it as that tool's call and result: the Messages API's own tool_use / tool_result turns.
Stable parts come first (system, examples, the step's prompt), then the rounds: what a prompt cache reuses
(vLLM's automatic prefix cache; Anthropic's at the breakpoints model_shapes.py and ``_prompt_content`` set).
"""

from __future__ import annotations

import json

from pydantic_ai.messages import (
    CachePoint,
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

# The frontier answers through a tool call whose arguments are the output (pydantic-ai's ``final_result``): a step's
# earlier rounds go back to it as that call and its result.
OUTPUT_TOOL = "final_result"


def conversation(req: ModelCallRequest) -> list[ModelMessage]:
    """The messages of one call: the system prompt, the worked examples (open route), the prompt, the step's rounds.

    The system prompt leads the first turn. Open route: each worked example is an earlier exchange (small models
    need them; a tool-calling frontier model would only pay for them), then the prompt; each earlier round's
    action is the assistant's JSON (the structured-output form the open dialects decode) and its results the next
    user turn. Frontier: each earlier round's action is a call of the output tool and its results that call's
    return, so the model sees its own tool use answered.
    """
    messages: list[ModelMessage] = []
    examples = req.examples if req.endpoint.route == "open" else []
    for example in examples:
        messages.append(ModelRequest(parts=[*_system(req, messages), UserPromptPart(example.prompt)]))
        messages.append(ModelResponse(parts=[TextPart(example.answer)]))
    messages.append(ModelRequest(parts=[*_system(req, messages), UserPromptPart(_prompt_content(req))]))
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


def _system(req: ModelCallRequest, earlier: list[ModelMessage]) -> list[SystemPromptPart]:
    return [SystemPromptPart(req.system)] if req.system and not earlier else []


def _prompt_content(req: ModelCallRequest) -> str | list[str | CachePoint]:
    """The prompt as its route takes it: one text on the open route (vLLM's prefix cache needs no marks, and small
    chat templates want a string); on the frontier its blocks (``prompt_blocks``), with a cache breakpoint after the
    run's stable head and after the last earlier step. With the system prompt's breakpoint and the conversation's
    last block (model_shapes.py) that is Anthropic's four: the next step reads what this one wrote up to its last
    earlier step, the next round all of this call."""
    ends = sorted({e for e in req.prompt_blocks if 0 < e < len(req.prompt)})  # offsets out of range mark nothing
    if req.endpoint.route != "frontier" or not ends:
        return req.prompt
    pieces = [req.prompt[a:b] for a, b in zip([0, *ends], [*ends, len(req.prompt)], strict=True)]
    content: list[str | CachePoint] = []
    for n, piece in enumerate(pieces):
        content.append(piece)
        if n in (0, len(pieces) - 2):
            content.append(CachePoint())
    return content
