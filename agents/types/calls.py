"""What crosses an activity boundary: model calls and their outputs, tool calls, usage and cost.

Every model has defaulted fields so new fields can be added without breaking runs that are already in
history. No secret ever goes in one of these.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from stakeflow.agents.budgets import BudgetRef

Route = Literal["open", "frontier"]
Stakes = Literal["low", "high"]
StakesOverride = Literal["auto", "low", "high"]
Sensitivity = Literal["public", "private"]
Risk = Literal["read_only", "side_effect", "irreversible"]
Dialect = Literal["vllm", "llamacpp", "openai"]
# replan: the remaining steps, revised after a step; judge: a shadow evaluation's comparison
Purpose = Literal["plan", "step", "answer", "judge", "replan"]
ToolSource = Literal["builtin", "mcp", "python"]
EgressRule = Literal["approve", "deny", "allow"]

STAKES_CHOICES: tuple[StakesOverride, ...] = ("auto", "low", "high")
SENSITIVITY_CHOICES: tuple[Sensitivity, ...] = ("public", "private")


def acting_risks() -> list[Risk]:
    """A fresh list of the risks of tools that act (all but read_only): the default of the high-risk lists."""
    return ["side_effect", "irreversible"]


class ModelEndpoint(BaseModel):
    """What the workflow knows about one route. Addresses and keys stay on the workers."""

    route: Route = "open"
    model: str = ""
    provider: str = ""  # "openai-compatible" or "anthropic"
    available: bool = True
    # Another OpenAI-compatible server than the configured one (a candidate model in `stakeflow evals replay`).
    base_url: str = ""


class JudgeVerdict(BaseModel):
    """The judge's answer for one ordering of the two candidates."""

    winner: Literal["A", "B", "tie"] = Field(description="A or B if one answer is clearly better, else tie.")
    reason: str = Field(description="One sentence: why.")


# --- model outputs -------------------------------------------------------------------------


class PlannedStep(BaseModel):
    """One step of a plan, as the planner wrote it."""

    title: str = Field(default="", description="What this step does, in one sentence.")
    tool: str | None = Field(default=None, description="The one tool this step uses, or null for pure reasoning.")
    stakes: Stakes = Field(default="low", description="high if a mistake here is costly or hard to undo, else low.")


class Plan(BaseModel):
    """The planner's output."""

    steps: list[PlannedStep] = Field(default_factory=list)


class ToolCall(BaseModel):
    """A tool call a model asked for."""

    tool: str = ""
    args: dict[str, Any] = Field(default_factory=dict)


class StepAction(BaseModel):
    """A model's output for one step: the tool calls to make and its own note."""

    tool_calls: list[ToolCall] = Field(default_factory=list)
    result: str = ""


class RoundTurn(BaseModel):
    """An earlier round of the step being worked on, as its next model call sees it: what the model asked for,
    and what the tools returned (outputs and errors, clipped as the run keeps them)."""

    action: StepAction = Field(default_factory=StepAction)
    results: list[ToolResult] = Field(default_factory=list)


class Usage(BaseModel):
    """Token usage of one model call, or the sum of several. Each input figure has ONE definition,
    the same in `run --json`, on the spans (and over OTLP), in the trace store's ``runs`` view and in
    `stakeflow costs`:

    * **input tokens** = uncached + cache read + cache write: ``total_input_tokens`` here; the
      ``input_tokens`` of `run --json`, of spans (OTel's ``gen_ai.usage.input_tokens``), of the
      ``spans`` and ``runs`` tables and of `costs`. Every total of input tokens includes the cache.
    * **raw input tokens** = the provider's own input figure, exactly as it sent it:
      ``raw_input_tokens(route)``; ``stakeflow.usage.raw_input_tokens`` on a model-call span. An
      OpenAI-compatible endpoint's ``prompt_tokens`` *includes* its cached tokens (so raw = input
      tokens on the open route); Anthropic's ``input_tokens`` *excludes* cache reads and writes (raw =
      uncached). Raw figures belong to one call: a sum over both routes would mix the two meanings,
      so no result or view sums them.
    * **uncached input tokens**: this model's ``input_tokens`` field. It keeps that name (and
      Anthropic's meaning) so results already in Temporal histories deserialize, and because prices
      apply to uncached and cached tokens separately; `run --json` shows it as
      ``uncached_input_tokens``.
    """

    input_tokens: int = 0  # uncached only: see the docstring before reading it as "input tokens"
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    requests: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            requests=self.requests + other.requests,
        )

    @property
    def total_input_tokens(self) -> int:
        """Input tokens as every report counts them: uncached + cache read + cache write."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    def raw_input_tokens(self, route: Route) -> int:
        """The input figure the route's API reported for this call (see the class docstring)."""
        return self.total_input_tokens if route == "open" else self.input_tokens

    @property
    def total_tokens(self) -> int:
        return self.total_input_tokens + self.output_tokens


# --- activity inputs and outputs -----------------------------------------------------------


class CallCostRecord(BaseModel):
    """What one model call cost, priced where it ran. ``usd`` is None when the model has no price."""

    usd: float | None = None
    frontier_equivalent_usd: float | None = None
    price_version: str | None = None
    unpriced: bool = False
    local: bool = False  # a model running on this machine (the embedded default): $0 unless configured
    # What the provider's prompt cache saved on this call: its price with every input token uncached, less ``usd``.
    # Negative when it wrote a prefix that no call has read yet (a cache write costs more than plain input).
    cache_saved_usd: float = 0.0


class CallFailure(BaseModel):
    """What a failed model call still spent (e.g. output that failed validation), carried across the activity
    boundary in its ApplicationError's details under ``CALL_FAILURE_KEY`` and rebuilt with ``from_details``."""

    usage: Usage = Field(default_factory=Usage)
    latency_ms: float = 0.0
    cost: CallCostRecord | None = None  # priced on the worker, where the price table is

    def as_details(self) -> dict[str, Any]:
        return {CALL_FAILURE_KEY: self.model_dump(mode="json")}

    @classmethod
    def from_details(cls, details: Any) -> CallFailure | None:
        """The failure in an ApplicationError's ``details`` tuple, or None when it carries none."""
        for item in details or ():
            if isinstance(item, dict) and CALL_FAILURE_KEY in item:
                return cls.model_validate(item[CALL_FAILURE_KEY])
        return None


CALL_FAILURE_KEY = "stakeflow.call_failure"


class CostSummary(BaseModel):
    """A run's bill, summed in the workflow from its calls."""

    open_usd: float = 0.0
    frontier_usd: float = 0.0
    frontier_equivalent_usd: float = 0.0
    open_calls: int = 0
    frontier_calls: int = 0
    unpriced_calls: int = 0
    open_local_calls: int = 0  # open calls priced as a local model
    cache_saved_usd: float = 0.0  # what prompt caches saved (CallCostRecord.cache_saved_usd, summed)
    agreement: str = ""  # the open path's measured agreement, as the run read it ("" = not measured)
    budgets: list[str] = Field(default_factory=list)  # the frontier budgets its calls drew on (agents/budgets.py)

    @property
    def total_usd(self) -> float:
        return self.open_usd + self.frontier_usd

    def add(self, route: str, cost: CallCostRecord) -> None:
        if route == "open":
            self.open_calls += 1
            self.open_local_calls += int(cost.local)
        else:
            self.frontier_calls += 1
        if cost.usd is None:
            self.unpriced_calls += 1
            return
        if route == "open":
            self.open_usd += cost.usd
        else:
            self.frontier_usd += cost.usd
        self.cache_saved_usd += cost.cache_saved_usd
        # For a frontier call the counterfactual is what it cost.
        equivalent = cost.frontier_equivalent_usd if route == "open" else cost.usd
        self.frontier_equivalent_usd += equivalent if equivalent is not None else 0.0


class ToolSpecView(BaseModel):
    """A tool as a run knows it: what a model is shown (name, description, argument schema) and the flags
    the workflow routes by (risk, local).

    The edge snapshots these into the run's input, so a run in flight keeps routing its tools the way it
    started even after an upgrade changes the catalogue (replay reads history, never today's code).
    """

    name: str = ""
    description: str = ""
    example: str = ""  # example arguments as JSON
    risk: Risk = "read_only"
    args_schema: dict[str, Any] = Field(default_factory=dict)
    local: bool = False  # fast, side-effect free, this machine only: may run as a local activity
    file_args: list[str] = Field(default_factory=list)  # arguments that name an existing workspace file
    sql_args: list[str] = Field(default_factory=list)  # arguments that are a SQL query over the workspace's files
    arithmetic_args: list[str] = Field(default_factory=list)  # arguments that are an arithmetic expression
    reads: list[str] = Field(default_factory=list)  # file suffixes it reads ("*" = any)
    source: ToolSource = "builtin"
    server: str = ""  # the MCP server (source "mcp")
    open_world: bool = False  # reaches outside controlled infrastructure: private data must not go there
    idempotent: bool = True  # false: never retried once the call may have acted
    private: bool = False  # its output is private data: the rest of the run stays on the open model
    risk_from: str = ""  # where the risk came from ("readOnlyHint", "no annotations: MCP defaults", ...)
    task_queue: str = ""  # where its calls run; "" = the tools queue
    timeout_s: float = 60.0


class ExampleTurn(BaseModel):
    """A worked example shown to the model as an earlier exchange: a prompt, and the answer to copy the form of."""

    prompt: str = ""
    answer: str = ""  # the output as JSON text


class ModelCallRequest(BaseModel):
    """Input of the call_model activity."""

    run_id: str = ""
    step: int = 0  # 0 = plan, 1..n = plan steps, n+1 = answer
    purpose: Purpose = "step"
    round: int = 1  # a step's rounds: model call, its tool calls, the model sees their results, ...
    # The step's earlier rounds, oldest first: the conversation the model continues (empty in round 1).
    rounds: list[RoundTurn] = Field(default_factory=list)
    endpoint: ModelEndpoint = Field(default_factory=ModelEndpoint)
    system: str = ""
    prompt: str = ""
    # Where the prompt's blocks end (offsets into it; the last block runs to its end): the run's stable head first,
    # then each earlier step, then this call's own ask (agents/prompts.py step_prompt_blocks). The frontier gets
    # them as content blocks, cache breakpoints after the head and after the last earlier step (activities/models.py).
    prompt_blocks: list[int] = Field(default_factory=list)
    # Earlier turns of worked examples (open route only: small models need them, tool-calling frontier
    # models would only pay for them).
    examples: list[ExampleTurn] = Field(default_factory=list)
    # plan: the tools the planner may name; step: the tool(s) the step may call.
    tools: list[ToolSpecView] = Field(default_factory=list)
    # A frontier step with a tool: every tool of the run's plan, so all its steps send one output-tool schema.
    # Anthropic's cache reads tools first: a schema that changed from step to step left each step nothing of the
    # last one's prefix to read. The model's answer is still checked against ``tools`` alone (model_shapes.py).
    shared_tools: list[ToolSpecView] = Field(default_factory=list)
    max_steps: int = 6
    # plan: the first step must use one of these (the tools that read a file the goal names), if any.
    first_step_tools: list[str] = Field(default_factory=list)
    # step: the step's first round must call its tool (the plan chose it); later rounds may make no call.
    require_tool_call: bool = False
    max_output_tokens: int = 1024
    # For the trace and the price: why this call goes where it goes.
    stakes: Stakes = "low"
    reason: str = ""
    escalated: bool = False
    source: str = ""
    agent: str = ""  # the named agent of the run, for the trace and `costs --by agent`
    frontier_model: str = ""  # priced as the counterfactual for open calls
    tool: str = ""  # the step's planned tool (for captures and evaluations)
    capture: bool = False  # keep the whole request and response in the local captures table
    private: bool = False  # the run's data is private at this call (recorded on a capture)
    # Frontier budgets this call draws on (agents/budgets.py): the call reserves its worst case before it is sent.
    budgets: list[BudgetRef] = Field(default_factory=list)
    run_frontier_usd: float = 0.0  # the run's frontier spend before this call (for its run_usd budget)
    over_budget_approved: bool = False  # a person approved this call past its budget
    # answer: publish the text to the run's event stream as the model writes it (agents/types/events.py). False in
    # runs of earlier releases and for every other purpose.
    stream: bool = False


class ModelCallResult(BaseModel):
    """Output of the call_model activity: exactly one of plan / action / text is set."""

    route: Route = "open"
    model: str = ""  # as the provider reported it
    plan: Plan | None = None
    action: StepAction | None = None
    text: str | None = None
    verdict: JudgeVerdict | None = None  # purpose "judge"
    usage: Usage = Field(default_factory=Usage)
    latency_ms: float = 0.0
    cost: CallCostRecord = Field(default_factory=lambda: CallCostRecord())
    # A streamed answer: its call's id in the run's events, and how much of ``text`` the activity published there
    # itself; the workflow appends the rest when the result arrives (activities/model_stream.py). "" from workers
    # that published it all.
    stream_call: str = ""
    stream_sent: int = 0


class ToolRequest(BaseModel):
    """Input of the run_tool activity."""

    run_id: str = ""
    step: int = 0
    call_index: int = 0
    tool: str = ""
    args: dict[str, Any] = Field(default_factory=dict)
    workspace: str = ""
    # Side-effecting tools act at most once per key, however often the activity is retried.
    idempotency_key: str = ""
    round: int = 1  # the round of the step that asked for this call (for the trace)
    idempotent: bool = True  # false: a call that may have acted is reported, never repeated


class ToolResult(BaseModel):
    """Output of the run_tool activity. A tool that refuses returns ok=False with the reason."""

    tool: str = ""
    ok: bool = True
    output: str = ""
    error: str | None = None
    truncated: bool = False
    replayed: bool = False  # the side effect had already happened under this idempotency key
    duration_ms: float = 0.0
    round: int = 1  # the round of the step that asked for it


RoundTurn.model_rebuild()
