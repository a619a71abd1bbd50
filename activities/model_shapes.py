"""What a ``call_model`` request is built from, once per endpoint and output shape, and its output checked against it.

call_model asks for one model response and validates it; it goes below pydantic-ai's ``Agent`` to its direct
request API (``pydantic_ai.direct.model_request``). An agent run of one request with no tools to execute and no
output retries (Temporal owns retries) cost ~2.5 ms of CPU per call in graph, capability and run-context
machinery: more than the HTTP client itself, the largest part of a loaded worker's profile (bench/README.md,
"model_request.py" and "Issue 27"). What the Agent did that matters is done here the same way, with its public
pieces: the output object (native and prompted output) or output tool (``final_result``) is defined from the same
output models by pydantic-ai's own JSON-schema generator and naming rules, the ``ModelRequestParameters`` say
the same output mode and whether text may answer, the model class adds what it always added (the schema
instructions, ``strict``), and the output is validated as the Agent validated it (markdown fences stripped; the
output tool's arguments; the same pydantic models). A response that fails raises ``UnexpectedModelBehavior`` with
the ``ValidationError`` as its cause, which model_errors.py maps to ``MODEL_OUTPUT_INVALID`` exactly as before.

Building a shape means building its output models (``create_model`` per allowed tool) and their JSON schema:
with 100 runs in flight that was ~10% of the worker's CPU when done per call. The key is everything a shape
depends on: route, model, dialect, purpose, and for plans and steps every allowed tool's name, description and
argument schema (a step's schema carries the enum of the run's workspace files, so two workspaces are two keys),
plus the plan's step limit and first-step tools. Bounded: the least recently used shape goes first.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_ai.exceptions import UnexpectedModelBehavior
from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.anthropic import AnthropicModelSettings
from pydantic_ai.output import OutputMode, OutputObjectDefinition
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import GenerateToolJsonSchema, ToolDefinition

from stakeflow.activities.model_messages import OUTPUT_TOOL
from stakeflow.activities.model_outputs import MAX_CALLS_PER_STEP, plan_output_model, step_output_model
from stakeflow.agents.types import Dialect, JudgeVerdict, ModelCallRequest, Route, ToolSpecView

MAX_SHAPES = 512
_DEFAULT_TOOL_DESCRIPTION = "The final response which ends this conversation"  # pydantic-ai's, for a model without one
# What the Agent raised when a response did not answer through the output tool (model_errors.invalid_reason words
# it from the response when it can: "called http_get instead of answering", "empty response").
NOT_ANSWERED = "Exceeded maximum output retries (0)"


@dataclass(frozen=True)
class RequestShape:
    """The output model (None: plain text, the answer), the request parameters and the settings of one shape."""

    output: type[BaseModel] | None
    params: ModelRequestParameters
    settings: ModelSettings  # without max_tokens: each call sets its own


def shape_key(req: ModelCallRequest, model_name: str, dialect: Dialect) -> tuple:
    """What a call's shape depends on (not the prompt, not the system prompt, not the per-call token limit)."""
    shape: tuple = ()
    if req.purpose in ("plan", "replan"):
        shape = (_described(req.tools), req.max_steps, tuple(req.first_step_tools))
    elif req.purpose == "step":
        shared = _described(req.shared_tools) if req.endpoint.route == "frontier" else ()  # the open route ignores it
        shape = (_described(req.tools), req.require_tool_call, shared)
    if dialect == "llamacpp" and req.purpose != "answer":  # its grammar bounds strings by the call's token limit
        shape = (*shape, req.max_output_tokens)
    return (req.endpoint.route, model_name, dialect, req.purpose, shape)


def _described(tools: list[ToolSpecView]) -> tuple:
    return tuple((t.name, t.description, json.dumps(t.args_schema, sort_keys=True)) for t in tools)


def build_shape(req: ModelCallRequest, dialect: Dialect) -> RequestShape:
    """The shape of ``req`` on its route, for an open endpoint of ``dialect``."""
    route: Route = req.endpoint.route
    # Greedy decoding on the open route: plans and tool calls are decisions, and a run (its answer too) should be
    # repeatable; it also makes the embedded model's end-to-end test deterministic. The frontier takes none: the API
    # version the anthropic client sends (2026-10-21) rejects sampling settings, which pydantic-ai drops with a warning.
    settings: ModelSettings = {"temperature": 0.0}
    if route == "frontier":
        settings = _frontier_settings(req)
    output = _output_model(req, route, dialect)
    if output is None:
        return RequestShape(None, ModelRequestParameters(), settings)
    definition = _object_definition(_frontier_schema(req, output) if route == "frontier" else output)
    if route == "frontier":  # the model calls OUTPUT_TOOL; text is no answer
        tool = ToolDefinition(
            name=OUTPUT_TOOL,
            description=definition.description or _DEFAULT_TOOL_DESCRIPTION,
            parameters_json_schema=definition.json_schema,
            strict=definition.strict,
            kind="output",
        )
        return RequestShape(
            output, ModelRequestParameters(output_mode="tool", output_tools=[tool], allow_text_output=False), settings
        )
    if dialect == "llamacpp":
        # llama.cpp's server refuses `json_schema` and ignores tools; its own json_object+schema form is
        # grammar-constrained (DESIGN.md, "Model endpoints").
        schema = _bounded_strings(output.model_json_schema(), req.max_output_tokens // 3)
        settings["extra_body"] = {"response_format": {"type": "json_object", "schema": schema}}
        mode: OutputMode = "prompted"
        # The prompt shows the schema without its patterns: the grammar enforces them, and a pattern of the
        # workspace's SQL (agents/sql_grammar.py) would fill a small model's context with a regular expression.
        definition = replace(definition, json_schema=_without_patterns(definition.json_schema))
    else:
        mode = "native"
    return RequestShape(output, ModelRequestParameters(output_mode=mode, output_object=definition), settings)


def _frontier_settings(req: ModelCallRequest) -> AnthropicModelSettings:
    """A frontier call's settings: where the prompt cache may keep what it sends (Anthropic reads a prefix at a tenth of the
    input price and writes one at 1.25x; a prefix under the model's minimum, 1,024 tokens or more, is not cached
    and costs nothing extra).

    Every call: the system prompt, which caches the tools before it too (the output tool's schema) for every call
    of that shape, in this run and the next. A step also marks the end of its conversation: its next round reads all
    of it (and the prompt's own blocks carry two more, models.py). A plan, answer or judgement marks no more: it is
    one call, and a prefix written that no later call reads costs a quarter more.
    """
    settings: AnthropicModelSettings = {"anthropic_cache_instructions": True}
    if req.purpose == "step":
        settings["anthropic_cache_messages"] = True
    return settings


def _frontier_schema(req: ModelCallRequest, output: type[BaseModel]) -> type[BaseModel]:
    """The output tool's schema on the frontier: a step's is the same in every round and, with ``shared_tools``, in
    every step of the run that has a tool; its first round's required call and its own tool are checked by
    validation alone (``output``: a call of another step's tool is invalid output). Anthropic caches the tools
    first: a schema that changed between rounds or steps would leave the next call nothing to read."""
    if req.purpose == "step" and req.tools:
        return step_output_model(req.shared_tools or req.tools, min_calls=0, say_empty=False)
    return output


def _output_model(req: ModelCallRequest, route: Route, dialect: Dialect) -> type[BaseModel] | None:
    if req.purpose == "answer":
        return None
    if req.purpose == "plan":
        return plan_output_model(req.tools, req.max_steps, req.first_step_tools)
    if req.purpose == "replan":
        return plan_output_model(req.tools, req.max_steps, min_steps=0)
    if req.purpose == "judge":
        return JudgeVerdict
    # A small model asked for several calls at once repeats itself or invents the rest: one per round.
    one_at_a_time = route == "open" and dialect == "llamacpp"
    return step_output_model(
        req.tools, min_calls=int(req.require_tool_call), max_calls=1 if one_at_a_time else MAX_CALLS_PER_STEP
    )


def _bounded_strings(schema: Any, max_chars: int) -> Any:
    """``schema`` (a copy) with every free string (no enum, const, pattern, format or length of its own) at most
    ``max_chars`` long: what llama.cpp's grammar then enforces. A token is at least one character, so with a third
    of the call's token limit a string the model never ends (SmolLM2's step note ``{{#1}}, {{#2}}: ...`` until the
    limit cut its JSON, twice, and the run failed) is closed in time, and the output stays valid JSON."""

    def bound(node: dict[str, Any]) -> dict[str, Any]:
        free = not any(k in node for k in ("enum", "const", "pattern", "format", "maxLength"))
        return {**node, "maxLength": max_chars} if node.get("type") == "string" and free else node

    return _each_object(schema, bound)


def _without_patterns(schema: Any) -> Any:
    """``schema`` without its strings' ``pattern`` keywords (a copy)."""
    return _each_object(
        schema, lambda node: {k: v for k, v in node.items() if not (k == "pattern" and isinstance(v, str))}
    )


def _each_object(schema: Any, change: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """A copy of the JSON ``schema`` with ``change`` applied to each of its objects, innermost first."""
    if isinstance(schema, dict):
        return change({k: _each_object(v, change) for k, v in schema.items()})
    if isinstance(schema, list):
        return [_each_object(v, change) for v in schema]
    return schema


def _object_definition(output: type[BaseModel]) -> OutputObjectDefinition:
    """The output object as pydantic-ai's output processor defines it: its tool JSON schema, titled by the model's
    name, the model's docstring as the description (taken out of the schema)."""
    schema = output.model_json_schema(schema_generator=GenerateToolJsonSchema)
    description = schema.pop("description", None)
    return OutputObjectDefinition(
        json_schema=schema, name=schema.get("title") or output.__name__, description=description
    )


def parse_output(shape: RequestShape, response: ModelResponse) -> Any:
    """The response's output: the answer's text, or the validated output model; raises UnexpectedModelBehavior."""
    if shape.params.output_mode == "tool":
        call = next((p for p in response.parts if isinstance(p, ToolCallPart) and p.tool_name == OUTPUT_TOOL), None)
        if call is None or shape.output is None:
            raise UnexpectedModelBehavior(NOT_ANSWERED)
        return _validated(shape.output, call.args_as_dict() if not isinstance(call.args, str) else call.args)
    text = "".join(p.content for p in response.parts if isinstance(p, TextPart))
    if not text:
        raise UnexpectedModelBehavior(NOT_ANSWERED)
    if shape.output is None:
        return text
    return _validated(shape.output, _strip_markdown_fences(text) or "{}")


def _validated(output: type[BaseModel], data: str | dict[str, Any] | None) -> BaseModel:
    try:
        if isinstance(data, str):
            return output.model_validate_json(data)
        return output.model_validate(data or {})
    except ValidationError as e:
        raise UnexpectedModelBehavior(NOT_ANSWERED) from e  # the cause is what model_errors reports


# pydantic-ai's own patterns (pydantic_ai._utils.strip_markdown_fences): the opening is found first and the fence
# matched from there only, so a text of many unclosed fences costs linear time, not quadratic.
_FENCE = re.compile(r"```(?:\w+)?\r?\n(\{.*?\})\s*(?:\r?\n?```|\Z)", flags=re.DOTALL)
_FENCE_OPENING = re.compile(r"```(?:\w+)?\r?\n\{")


def _strip_markdown_fences(text: str) -> str:
    """JSON inside a markdown fence, as pydantic-ai's output validation takes it (a model may fence its JSON)."""
    if text.startswith("{"):
        return text
    opening = _FENCE_OPENING.search(text)
    found = _FENCE.match(text, opening.start()) if opening else None
    return found.group(1) if found else text


class ShapeCache:
    """Request shapes by ``shape_key``, built on a miss."""

    def __init__(self, size: int = MAX_SHAPES) -> None:
        self._size = size
        self._shapes: OrderedDict[tuple, RequestShape] = OrderedDict()

    def get(self, req: ModelCallRequest, model_name: str, dialect: Dialect) -> RequestShape:
        """The shape of ``req``; its settings a dict of this call's own, with its ``max_tokens``."""
        key = shape_key(req, model_name, dialect)
        found = self._shapes.get(key)
        if found is None:
            found = self._shapes[key] = build_shape(req, dialect)
            if len(self._shapes) > self._size:
                self._shapes.popitem(last=False)
        else:
            self._shapes.move_to_end(key)
        return replace(found, settings={**found.settings, "max_tokens": req.max_output_tokens})

    def clear(self) -> None:
        self._shapes.clear()

    def __len__(self) -> int:
        return len(self._shapes)
