"""Output types for one model call, built per request so the model can only name the allowed tools.

The planner's ``tool`` is a ``Literal`` of the request's tool names; a step's tool calls are a union
of one model per allowed tool, whose ``args`` follow that tool's JSON schema. Grammar-constrained
decoding (llama.cpp, vLLM) then produces valid plans and calls, and validation rejects anything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import GenericAlias
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic_core import to_jsonable_python

from stakeflow.agents.types import Plan, PlannedStep, Stakes, StepAction, ToolCall, ToolSpecView

_STEP_FIELDS = PlannedStep.model_fields
# A step uses one tool; a few calls of it are plausible (two files), more is a model looping.
MAX_CALLS_PER_STEP = 3
_SCALARS: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool, "null": type(None)}


def _union(types: list[Any]) -> Any:
    return types[0] if len(types) == 1 else Union[tuple(types)]  # noqa: UP007 (built at runtime)


def _list_of(item: Any) -> Any:
    """``list[item]`` for an item type built at runtime (the very object ``list[item]`` makes)."""
    return GenericAlias(list, (item,))


def _json_type(schema: dict[str, Any], name: str) -> Any:
    """A Python type for a JSON-schema fragment: the subset tool argument schemas use.

    Anything it does not understand (``$ref``, ``allOf``) becomes ``Any``: still accepted, just not
    constrained, rather than a tool that cannot be offered at all.
    """
    if "enum" in schema:
        return Literal[tuple(schema["enum"])]
    if "const" in schema:
        return Literal[schema["const"]]
    if "anyOf" in schema or "oneOf" in schema:
        return _union([_json_type(s, name) for s in schema.get("anyOf") or schema["oneOf"]])
    kind = schema.get("type")
    if isinstance(kind, list):
        return _union([_json_type({**schema, "type": k}, name) for k in kind])
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "array":
        return _list_of(_json_type(schema.get("items") or {}, name))
    if kind == "object" and schema.get("properties"):
        return model_from_schema(schema, name)
    if kind == "object":
        return dict[str, Any]
    return Any


# On a generated arguments model: the optional properties without a default, which a null stands in for.
_OMITTED = "__stakeflow_omitted_when_null__"


def model_from_schema(schema: dict[str, Any], name: str) -> type[BaseModel]:
    """A pydantic model for an object JSON schema (a tool's ``args_schema``).

    An optional property without a default becomes ``X | None = None`` (a model may leave it out, or emit
    null where the decoder allows it); ``arguments`` then leaves it out of the call, since a server that
    validates strictly (zod, in the npm reference servers) refuses a null where its schema says a number.
    """
    required = set(schema.get("required") or [])
    fields: dict[str, Any] = {}
    omitted: set[str] = set()
    for prop, prop_schema in (schema.get("properties") or {}).items():
        annotation = _json_type(prop_schema, f"{name}_{prop}")
        if prop in required:
            default: Any = ...
        elif "default" in prop_schema:
            default = prop_schema["default"]
        else:
            annotation, default = annotation | None, None
            omitted.add(prop)
        # A string's pattern and length bounds stay in the schema a grammar-constrained decoder enforces; the
        # tool checks its own arguments (with its own messages), so the output is not refused for them here.
        bounds = {k: prop_schema[k] for k in ("pattern", "minLength", "maxLength") if k in prop_schema}
        fields[prop] = (
            annotation,
            Field(default, description=prop_schema.get("description"), json_schema_extra=bounds or None),
        )
    extra: Literal["forbid", "ignore"] = "forbid" if schema.get("additionalProperties") is False else "ignore"
    model = create_model(name, __config__=ConfigDict(extra=extra), **fields)
    setattr(model, _OMITTED, frozenset(omitted))
    return model


def arguments(args: BaseModel) -> dict[str, Any]:
    """A validated tool-arguments model as the call sends it: what the model gave, and the schema's defaults.

    An optional property the model left out (or gave as null) is not sent at all: never ``null`` for it.
    """
    omitted: frozenset[str] = getattr(type(args), _OMITTED, frozenset())
    out: dict[str, Any] = {}
    for name in type(args).model_fields:
        value = getattr(args, name)
        if value is None and name in omitted:
            continue
        out[name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return arguments(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return to_jsonable_python(value)


def _camel(name: str) -> str:
    """A class-name form of a tool name: "git.git_status" -> "GitGitStatus" (MCP names carry a dot)."""
    cleaned = "".join(c if c.isalnum() else "_" for c in name)
    return "".join(part.capitalize() for part in cleaned.split("_") if part) or "Tool"


def _plan_step(names: tuple[str, ...], name: str = "PlannedStep", doc: str = "One step of the plan.") -> Any:
    tool_type: Any = Literal[names] | None if names else None
    return create_model(
        name,
        __doc__=doc,
        title=(str, Field(description=_STEP_FIELDS["title"].description)),
        tool=(tool_type, Field(description=_STEP_FIELDS["tool"].description)),
        stakes=(Stakes, Field(description=_STEP_FIELDS["stakes"].description)),
    )


def plan_output_model(
    tools: list[ToolSpecView], max_steps: int, first_tools: Sequence[str] = (), min_steps: int = 1
) -> type[BaseModel]:
    """The planner's output: min_steps..max_steps steps (a revised plan may have none), each naming one of
    ``tools`` or null.

    With ``first_tools``, the first step must use one of them (e.g. the tools that read a file the goal
    names): the plan is then ``{"first": step, "then": [steps]}``, a shape every structured-output decoder
    enforces (no ``prefixItems``). ``to_plan`` turns either shape into a Plan.
    """
    names = tuple(t.name for t in tools)
    step = _plan_step(names)
    first_names = tuple(n for n in first_tools if n in names)
    if not first_names:
        return create_model(
            "Plan",
            __doc__="The plan: the steps that reach the goal, in order.",
            steps=(_list_of(step), Field(min_length=min_steps, max_length=max(min_steps, max_steps))),
        )
    first_tool: Any = Literal[first_names]
    first = create_model(
        "FirstStep",
        __doc__="The first step of the plan.",
        title=(str, Field(description=_STEP_FIELDS["title"].description)),
        tool=(first_tool, Field(description="The tool this first step uses.")),
        stakes=(Stakes, Field(description=_STEP_FIELDS["stakes"].description)),
    )
    return create_model(
        "Plan",
        __doc__="The plan: its first step, then the steps that follow it, in order.",
        first=(first, ...),
        then=(_list_of(step), Field(max_length=max(0, max_steps - 1))),
    )


def step_output_model(
    tools: list[ToolSpecView], min_calls: int = 0, max_calls: int = MAX_CALLS_PER_STEP, *, say_empty: bool | None = None
) -> type[BaseModel]:
    """A step's output: ``min_calls`` to ``max_calls`` tool calls (each an allowed tool with args matching its
    schema) and a note. ``say_empty``: whether the description says the list may be empty (default: when it may)."""
    result_field = (str, Field(description="Your note on this step: what you did or concluded."))
    if not tools:
        return create_model("StepAction", __doc__="Your answer for this step.", result=result_field)
    calls = [_call_model(t) for t in tools]
    empty = not min_calls if say_empty is None else say_empty
    described = "The tool calls to make, in order; empty if none." if empty else "The tool calls to make, in order."
    return create_model(
        "StepAction",
        __doc__="The tool calls this step makes, and your note on it.",
        tool_calls=(
            _list_of(_union(calls)),
            Field(min_length=min_calls, max_length=max(min_calls, max_calls), description=described),
        ),
        result=result_field,
    )


def _call_model(tool: ToolSpecView) -> type[BaseModel]:
    """One allowed tool's call: its name, and args that follow its JSON schema."""
    name: Any = Literal[tool.name]
    return create_model(
        f"{_camel(tool.name)}Call",
        __doc__=tool.description or None,
        tool=(name, ...),
        args=(model_from_schema(tool.args_schema, f"{_camel(tool.name)}Args"), ...),
    )


def to_plan(output: BaseModel) -> Plan:
    """The plain Plan (agents/types.py) for a validated planner output (either shape)."""
    data = output.model_dump(mode="json")
    if "first" in data:
        data = {"steps": [data["first"], *data.get("then", [])]}
    return Plan.model_validate(data)


def to_action(output: BaseModel) -> StepAction:
    """The plain StepAction for a validated step output."""
    calls = [ToolCall(tool=c.tool, args=arguments(c.args)) for c in getattr(output, "tool_calls", [])]
    return StepAction(tool_calls=calls, result=getattr(output, "result", ""))
