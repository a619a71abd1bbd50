"""What crosses the workflow boundary: a run's request (routing facts, policies, tools), its steps, result and
progress.

Every model has defaulted fields so new fields can be added without breaking runs that are already in
history. No secret ever goes in one of these.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from temporalio.contrib.workflow_streams import WorkflowStreamState

from stakeflow.agents.budgets import BudgetRef
from stakeflow.agents.types.calls import (
    CostSummary,
    EgressRule,
    ModelEndpoint,
    PlannedStep,
    Risk,
    Route,
    Sensitivity,
    Stakes,
    StakesOverride,
    ToolCall,
    ToolResult,
    ToolSpecView,
    Usage,
    acting_risks,
)

# Rounds per step, at most, whatever the configuration says: a step's rounds share one history (a run continues
# as new between steps), so this bounds it.
MAX_ROUNDS = 10


class RoutingConfig(BaseModel):
    """The routing facts the policy needs, snapshotted at the edge when a run starts."""

    open: ModelEndpoint = Field(default_factory=lambda: ModelEndpoint(route="open"))
    frontier: ModelEndpoint = Field(
        default_factory=lambda: ModelEndpoint(route="frontier", provider="anthropic", available=False)
    )
    escalate_on_invalid: bool = True
    fallback_on_unavailable: bool = True
    # Temporal retries of one model call before it counts as unavailable (then fallback or failure).
    model_max_attempts: int = 6
    model_retry_initial_s: float = 2.0
    downgrade_when_frontier_missing: bool = True
    # How many times the open model may answer invalidly before the step escalates (or fails).
    open_attempts: int = 2
    high_risk: list[Risk] = Field(default_factory=acting_risks)
    # Tools whose output is private data: once one runs, the rest of the run is private.
    private_tools: list[str] = Field(default_factory=list)
    # A private run calling an open-world tool: wait for approval, refuse, or allow ([policy] private_egress).
    private_egress: EgressRule = "approve"
    # The plan must start by reading a workspace file the goal names ([policy] first_step_reads).
    first_step_reads: bool = False
    # An open-route step's SQL is held to the workspace's tables and columns ([policy] sql_grammar).
    sql_grammar: bool = False
    # An open-route step's arithmetic uses only the figures the run has seen ([policy] calculator_grammar).
    calculator_grammar: bool = False
    # Route a step kind to the frontier when the lower bound of its measured agreement is below this.
    min_agreement: float | None = None
    min_samples: int = 30
    # Open-model calls run as local activities on the worker that runs the workflow ([workers] local_model_calls).
    open_local: bool = False
    # The agent loop ([policy] max_rounds, escalate_when_stuck, replan, check_answer). The defaults here are
    # what runs of earlier releases did — one round per step, no replanning, no answer check — so their
    # histories replay unchanged; the edge fills in today's policy for every new run.
    max_rounds: int = 1  # rounds per step: model call, tool calls, the model sees their results, ...
    escalate_when_stuck: bool = False  # an open step that ends its rounds failing is re-run on the frontier
    replan: bool = False  # a step that failed lets the model revise the steps that remain
    check_answer: bool = False  # the answer's figures must appear in what the run observed


class EvalPolicy(BaseModel):
    """``[evals]`` as a run carries it (no secrets)."""

    shadow_rate: float = 0.0  # share of public, open-routed calls re-run on the frontier (0 = off)
    max_usd_per_day: float | None = None  # shadow spend (frontier + judge) stops when this is spent
    judge_model: str = ""  # "" = the frontier model
    capture: bool = False  # keep each call's request and response in the local trace store (never in spans)
    include_private: bool = False  # capture private runs too ([dataset] include_private)


class ApprovalPolicy(BaseModel):
    """When a person must approve a step before it acts."""

    # A high-stakes step whose tool has one of these risks waits for approval (so does private + high).
    risks: list[Risk] = Field(default_factory=acting_risks)
    timeout_s: float = 3600.0  # then the step is rejected, not left hanging
    auto_approve: bool = False  # unattended runs (--auto-approve); recorded as such


class ApprovalRequest(BaseModel):
    """Input of the ``approve_step`` update."""

    step: int = 0
    decision: Literal["approve", "reject"] = "approve"
    note: str = ""
    by: str = ""
    # Approve these calls instead of the ones that wait (same tools, the approver's arguments).
    tool_calls: list[ToolCall] | None = None


class ApprovalRecord(BaseModel):
    """How a step's approval was decided."""

    decision: Literal["approved", "rejected", "timed_out", "auto_approved"] = "approved"
    note: str = ""
    by: str = ""
    at: str = ""  # ISO time, workflow clock
    waiting_for: str = ""  # what was waiting: the tool calls, shown to the approver
    edited_calls: list[ToolCall] | None = None  # what the approver approved instead, if they changed it


class ResumeState(BaseModel):
    """What a run carries across continue-as-new: its plan and everything done so far."""

    plan: list[PlannedStep] = Field(default_factory=list)
    progress: Progress | None = None
    sensitivity: Sensitivity = "public"
    plan_route: RouteDecision | None = None
    generation: int = 1  # how many times the run has continued as new
    # The tools as described when the run planned (MCP, Python): a new generation does not describe again.
    tool_specs: list[ToolSpecView] = Field(default_factory=list)
    agreement: Any = None  # the AgreementTable the run read (agents/evals.py), carried as data
    # The run's event stream so far (agents/types/events.py), so its offsets go on and a late reader misses nothing.
    events: WorkflowStreamState | None = None


class TaskRequest(BaseModel):
    """Input of AgentTaskWorkflow."""

    goal: str = ""
    stakes: StakesOverride = "auto"
    sensitivity: Sensitivity = "public"
    tools: list[str] = Field(default_factory=list)  # allowed tools; the edge fills in the default set
    workspace: str = ""
    # The workspace's files as the edge saw them at start ("notes.txt (612 bytes)"), so models
    # name real paths; the tools re-check everything.
    workspace_files: list[str] = Field(default_factory=list)
    # Every workspace file's path, when the edge could list them all (else empty): a tool argument that
    # must name an existing file is offered as an enum of these.
    workspace_paths: list[str] = Field(default_factory=list)
    # Each CSV or TSV file's column names, by path (as the edge read them at start): the tables SQL may use.
    workspace_tables: dict[str, list[str]] = Field(default_factory=dict)
    # The allowed tools as the edge saw them (empty in runs started before this field: then the catalogue).
    tool_specs: list[ToolSpecView] = Field(default_factory=list)
    # Tools described where they run, when the run plans (MCP servers, Python tools).
    toolsets: list[ToolsetRef] = Field(default_factory=list)
    agent: str = ""  # the named agent ([agents.<name>]), if any
    instructions: str = ""  # the agent's role, put before each system prompt
    evals: EvalPolicy = Field(default_factory=EvalPolicy)
    max_steps: int = 6
    budget_tokens: int | None = None  # total tokens (all calls); the run fails cleanly when exceeded
    source: str = "cli"
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    queue_prefix: str = "stakeflow"
    # A model call whose worker stops heartbeating for this long is retried on another worker.
    heartbeat_timeout_s: float = 30.0
    approvals: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    # Long plans continue as new after this many steps (or sooner when Temporal suggests it),
    # so a run's history stays small whatever the plan's length.
    steps_per_history: int = 100
    resume: ResumeState | None = None
    # The frontier budgets its frontier calls draw on (agents/budgets.py); empty in runs started before budgets.
    budgets: list[BudgetRef] = Field(default_factory=list)


class ToolsetRef(BaseModel):
    """Tools a run may use that are described where they run, when the run plans: an MCP server's, or the
    team's Python tools. The description comes back as an activity result, so it is in history: replays and
    retries see the catalogue the run started with."""

    kind: Literal["mcp", "python"] = "mcp"
    name: str = ""  # the MCP server ("" for Python tools)
    task_queue: str = ""  # where to describe (and later call) them; "" = the tools queue
    patterns: list[str] = Field(default_factory=lambda: ["*"])  # tool names or globs, without the server prefix
    required: bool = True  # a toolset that cannot be described fails the run (else the run goes on without it)
    # MCP: false = the server's annotations are not believed (its [mcp.<name>] or the run's agent says so); why.
    trust_annotations: bool = True
    distrusted_by: str = ""  # "[mcp.git] trust_annotations = false", "agent careful: trust_annotations = false"


class ToolsetRequest(BaseModel):
    """Input of the describe_tools activity."""

    toolset: ToolsetRef = Field(default_factory=ToolsetRef)


class ToolsetResult(BaseModel):
    """Output of the describe_tools activity: the tools, or why there are none."""

    tools: list[ToolSpecView] = Field(default_factory=list)
    error: str | None = None
    # Names or globs the run asked for that no tool matches (then ``error`` says so, with the tools there are).
    missing: list[str] = Field(default_factory=list)
    # Tools left out, each with why (an MCP tool that needs tasks, which stakeflow does not run).
    skipped: list[str] = Field(default_factory=list)


# --- routing and results -------------------------------------------------------------------


class RouteDecision(BaseModel):
    """Where one model call goes, and why."""

    route: Route = "open"
    model: str = ""
    task_queue: str = ""
    stakes: Stakes = "low"
    reason: str = ""
    needs_approval: bool = False
    downgraded: bool = False  # high stakes, but the frontier is not configured
    escalated: bool = False
    fallback: bool = False  # the open endpoint was unavailable, so the frontier answered


class RoundRecord(BaseModel):
    """One round of a step: the model call (where it ran) and the tool calls it asked for. Their results are the
    step's ``tool_results`` whose ``round`` is this one."""

    round: int = 1
    route: Route = "open"
    model: str = ""
    escalated: bool = False
    tool_calls: list[ToolCall] = Field(default_factory=list)
    note: str = ""  # the model's own note on the step, as it wrote it this round
    repeated: int = 0  # calls it asked for again, exactly as before: not run again


StepStatus = Literal["pending", "running", "awaiting_approval", "ok", "tool_error", "failed", "skipped"]


class StepRecord(BaseModel):
    """What happened in one step."""

    index: int = 0
    title: str = ""
    status: StepStatus = "pending"
    route: Route = "open"
    model: str = ""
    stakes: Stakes = "low"
    reason: str = ""
    tools: list[str] = Field(default_factory=list)
    needs_approval: bool = False
    downgraded: bool = False
    escalated: bool = False
    fallback: bool = False
    attempts: list[str] = Field(default_factory=list)  # one line per model attempt: "open: invalid output ..."
    result: str = ""
    tool_results: list[ToolResult] = Field(default_factory=list)
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = 0.0  # None once any call of the step was unpriced
    approval: ApprovalRecord | None = None
    rounds: list[RoundRecord] = Field(default_factory=list)
    stuck: str = ""  # why the step ended without the result it needed ("3 failed sql_query calls"), if it did
    waiting_for: str = ""  # while the step waits for approval: its tool calls, as the approver sees them


class TaskResult(BaseModel):
    """Output of AgentTaskWorkflow."""

    status: Literal["completed", "failed"] = "completed"
    goal: str = ""
    answer: str = ""
    plan_route: RouteDecision | None = None
    answer_route: RouteDecision | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    sensitivity: Sensitivity = "public"
    usage: Usage = Field(default_factory=Usage)
    notices: list[str] = Field(default_factory=list)  # downgrades, taints: things the user must see
    error: str | None = None
    cost: CostSummary = Field(default_factory=CostSummary)
    # The answer check ([policy] check_answer): None for runs that did not check (earlier releases).
    answer_supported: bool | None = None
    unsupported_claims: list[str] = Field(default_factory=list)  # figures and quotations nothing observed holds
    replans: int = 0  # how many times the plan was revised


class Progress(BaseModel):
    """Answer of the ``progress`` query."""

    phase: Literal["planning", "executing", "answering", "done", "failed"] = "planning"
    awaiting_approval: list[int] = Field(default_factory=list)
    current_step: int = 0
    current_round: int = 0
    total_steps: int = 0
    steps: list[StepRecord] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    notices: list[str] = Field(default_factory=list)
    error: str | None = None
    cost: CostSummary = Field(default_factory=CostSummary)
    replans: int = 0
    answer_supported: bool | None = None  # the answer check's verdict, once the answer was checked
    unsupported_claims: list[str] = Field(default_factory=list)
    budget_downgrades: int = 0  # model calls a spent frontier budget kept on the open model


ResumeState.model_rebuild()
TaskRequest.model_rebuild()
ToolsetResult.model_rebuild()
ApprovalRequest.model_rebuild()
ApprovalRecord.model_rebuild()
