"""The anchor column of bench/tasks.py: the same tasks through a plain pydantic-ai ``Agent``.

What a team would write by hand with the same model endpoint and the same tools: one ``Agent``, a system
prompt naming the tools and the workspace's files, and a loop in which the model sees every tool result
before it decides again. The tools are stakeflow's own implementations (``stakeflow.activities.tools``' executors,
called directly as Python functions, with the default ``[tools]`` limits), described to the model with the
catalogue's own texts (``stakeflow.agents.tools.CATALOGUE``), and each output is clipped to the 3,000 characters
stakeflow's prompts keep (``stakeflow.agents.prompts.MAX_CONTEXT_CHARS``). A tool error goes back to the model as
the tool's result ("error: ..."), so it can try again. Decoding is greedy (temperature 0), at most 1,024
output tokens a call, as in stakeflow's ``call_model``.

Two ways to let the model call tools, chosen by the endpoint's dialect (``--anchor-mode`` overrides):

- ``native`` (vLLM, OpenAI; ``STAKEFLOW_OPEN_DIALECT`` vllm/openai): the textbook pydantic-ai agent,
  ``Agent(model, tools=[...])`` and ``agent.run(goal)``; pydantic-ai runs the loop with the provider's native
  tool calls (vLLM needs ``--enable-auto-tool-choice --tool-call-parser ...``). At most ``max_rounds``
  model requests (``UsageLimits``); over that, the task has failed.
- ``prompted`` (the embedded llama.cpp server; dialect llamacpp): llama-cpp-python's server ignores
  ``tools`` (checked: the model answers in prose, no tool is called, DESIGN.md "Model endpoints"), so
  native tool calling is no option there. What a team does instead is what DESIGN.md found to work: ask
  for a JSON object under the server's grammar (``response_format: {"type": "json_object", "schema":
  ...}`` in ``extra_body``), here ``{"tool": <an offered tool or "final_answer">, "input": "..."}``, run
  the tool, and send its result as the next user turn (``message_history`` carries the conversation). The
  reply is parsed with ``json.loads(strict=False)``: llama-cpp-python's grammar lets raw newlines into
  JSON strings, which pydantic's strict parser (and so ``PromptedOutput``) refuses; stakeflow repairs the
  same thing in ``LlamaCppChatModel``. A reply that does not parse is answered with the error and counts
  as a round. The last of ``max_rounds`` allows only ``final_answer``, so the loop ends with an answer.
  The model profile says what that server reads (``max_tokens``, one system message), as stakeflow's does.

What the anchor does *not* have, and stakeflow does: a plan, worked examples, file names as an enum,
per-tool argument schemas (here a single "input" string), routing, durability.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from openai import AsyncOpenAI
from pydantic import BaseModel, Field, ValidationError, create_model
from pydantic_ai import Agent, Tool
from pydantic_ai.exceptions import UsageLimitExceeded
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.profiles.openai import OpenAIModelProfile
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.usage import UsageLimits

from stakeflow.activities.tools import EXECUTORS
from stakeflow.activities.tools.context import ToolContext
from stakeflow.agents.prompts import MAX_CONTEXT_CHARS
from stakeflow.agents.tools import CATALOGUE
from stakeflow.config import ToolsConfig
from stakeflow.core.errors import ToolError

SUPPORTED_TOOLS = ("read_file", "sql_query", "calculator")
MAX_OUTPUT_TOKENS = 1024
FINAL = "final_answer"
_ROLE = (
    "You answer the user's question about the files in a workspace. Use the tools to look at the data; "
    "answer from what they return, and do not invent facts."
)


@dataclass
class AnchorResult:
    """One task through the anchor: the answer (None = none), what it cost, and each round."""

    answer: str | None = None
    error: str | None = None
    calls: int = 0
    rounds: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    wall_s: float = 0.0
    transcript: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Endpoint:
    """The open model, as stakeflow's settings name it."""

    base_url: str
    model: str
    api_key: str
    dialect: str  # llamacpp | vllm | openai


def anchor_mode(dialect: str) -> Literal["native", "prompted"]:
    return "prompted" if dialect == "llamacpp" else "native"


class Anchor:
    """Runs tasks through plain pydantic-ai against ``endpoint``, one at a time."""

    def __init__(self, endpoint: Endpoint, mode: str, max_rounds: int = 6) -> None:
        self.mode = mode
        self.max_rounds = max_rounds
        client = AsyncOpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key or "none", max_retries=0)
        profile = None
        if endpoint.dialect == "llamacpp":
            profile = OpenAIModelProfile(
                openai_chat_supports_max_completion_tokens=False,
                openai_chat_supports_multiple_system_messages=False,
            )
        self.model = OpenAIChatModel(endpoint.model, provider=OpenAIProvider(openai_client=client), profile=profile)
        self._ledger = Path(tempfile.mkdtemp(prefix="bench-anchor-"))

    async def run(self, goal: str, workspace: Path, tools: tuple[str, ...], timeout_s: float) -> AnchorResult:
        unknown = set(tools) - set(SUPPORTED_TOOLS)
        if unknown:
            raise ValueError(f"the anchor offers only {', '.join(SUPPORTED_TOOLS)}, not {', '.join(sorted(unknown))}")
        out = AnchorResult()
        started = time.perf_counter()
        loop = self._native if self.mode == "native" else self._prompted
        try:
            await asyncio.wait_for(loop(goal, workspace, tools, out), timeout_s)
        except TimeoutError:
            out.error = f"timed out after {timeout_s:g}s"
        except UsageLimitExceeded as e:
            out.error = f"no answer within {self.max_rounds} model requests ({e})"
        except Exception as e:  # the model endpoint failing is an outcome here, not a crash of the benchmark
            out.error = f"{type(e).__name__}: {e}"
        out.wall_s = time.perf_counter() - started
        return out

    # --- the tools, as plain functions --------------------------------------------------------------------

    async def call_tool(self, name: str, args: dict[str, Any], workspace: Path) -> str:
        """stakeflow's executor for ``name``, called directly; a refusal becomes the text the model sees."""
        ctx = ToolContext(workspace=str(workspace), config=ToolsConfig(), legacy_ledger_dir=self._ledger)
        try:
            result = await EXECUTORS[name](CATALOGUE[name].args_model(**args), ctx)
        except (ToolError, ValidationError, TypeError) as e:
            return f"error: {e}"
        text = result.output
        if len(text) > MAX_CONTEXT_CHARS:
            text = text[:MAX_CONTEXT_CHARS] + f"\n[... {len(text) - MAX_CONTEXT_CHARS} more characters not shown]"
        return text

    # --- native tool calls (vLLM, OpenAI) ----------------------------------------------------------------

    async def _native(self, goal: str, workspace: Path, tools: tuple[str, ...], out: AnchorResult) -> None:
        def as_tool(name: str) -> Tool:
            async def run_it(**kwargs: Any) -> str:
                output = await self.call_tool(name, kwargs, workspace)
                out.transcript.append({"tool": name, "args": kwargs, "output": output[:500]})
                return output

            spec = CATALOGUE[name]
            return Tool.from_schema(run_it, name=name, description=spec.description, json_schema=_schema(name))

        agent = Agent(self.model, system_prompt=_system(workspace), tools=[as_tool(t) for t in tools])
        result = await agent.run(
            goal,
            model_settings={"temperature": 0.0, "max_tokens": MAX_OUTPUT_TOKENS},
            usage_limits=UsageLimits(request_limit=self.max_rounds),
        )
        usage = result.usage
        out.calls = out.rounds = usage.requests
        out.input_tokens, out.output_tokens = usage.input_tokens, usage.output_tokens
        out.answer = result.output

    # --- structured output under llama.cpp's grammar -----------------------------------------------------

    async def _prompted(self, goal: str, workspace: Path, tools: tuple[str, ...], out: AnchorResult) -> None:
        agent = Agent(self.model, system_prompt=_system(workspace, tools))
        history = None
        prompt = goal
        for n in range(1, self.max_rounds + 1):
            last = n == self.max_rounds
            action_type = _action_model(() if last else tools)
            if last and n > 1:
                prompt += "\n\nThis is your last turn: give your final answer."
            schema = action_type.model_json_schema()
            result = await agent.run(
                prompt,
                message_history=history,
                model_settings={
                    "temperature": 0.0,
                    "max_tokens": MAX_OUTPUT_TOKENS,
                    "extra_body": {"response_format": {"type": "json_object", "schema": schema}},
                },
            )
            history = result.all_messages()
            usage = result.usage
            out.calls += usage.requests
            out.rounds += 1
            out.input_tokens += usage.input_tokens
            out.output_tokens += usage.output_tokens
            try:
                action = action_type.model_validate(json.loads(result.output, strict=False))
            except (ValueError, ValidationError) as e:
                out.transcript.append({"reply": result.output[:500], "error": str(e)[:300]})
                prompt = f"That reply was not one JSON object of the form described ({str(e)[:200]}). Reply again."
                continue
            if action.tool == FINAL:
                out.answer = action.input
                out.transcript.append({"tool": FINAL, "input": action.input})
                return
            output = await self.call_tool(action.tool, {_argument(action.tool): action.input}, workspace)
            out.transcript.append({"tool": action.tool, "input": action.input, "output": output[:500]})
            prompt = f"Result of {action.tool}:\n{output}"
        out.error = f"no final answer in {self.max_rounds} rounds"


def _argument(tool: str) -> str:
    """The one argument each supported tool takes (path, query, expression)."""
    (name,) = CATALOGUE[tool].args_model.model_fields
    return name


def _schema(tool: str) -> dict[str, Any]:
    return CATALOGUE[tool].args_model.model_json_schema()


def _files(workspace: Path) -> str:
    names = sorted(p.name for p in workspace.iterdir() if p.is_file() and not p.name.startswith("."))
    return ", ".join(names) or "(none)"


def _system(workspace: Path, tools: tuple[str, ...] = ()) -> str:
    """The system prompt: the role and the workspace's files; in prompted mode, the tools and the reply form."""
    text = f"{_ROLE}\nFiles in the workspace: {_files(workspace)}"
    if not tools:
        return text
    lines = []
    for t in tools:
        spec = CATALOGUE[t]
        field_info = spec.args_model.model_fields[_argument(t)]
        lines.append(f"- {t}: {spec.description} input: {field_info.description}")
    return (
        f"{text}\nTools:\n" + "\n".join(lines) + "\n"
        'Reply with one JSON object each turn, with two fields: "tool", the name of the tool to use (you will '
        'see its result), or "final_answer" once the results answer the question; and "input", the tool\'s '
        "input, or your answer."
    )


def _action_model(tools: tuple[str, ...]) -> type[BaseModel]:
    names: Any = Literal[(*tools, FINAL)]
    return create_model(
        "Action",
        __doc__="Your next move: one tool call, or the final answer.",
        tool=(names, Field(description="A tool name, or final_answer")),
        input=(str, Field(description="The tool's input, or your final answer")),
    )
