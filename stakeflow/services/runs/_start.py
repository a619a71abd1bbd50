"""Starting runs: the request (validated, with the agent's defaults and the routing facts), the start, the wait.

Used by the CLI and the webhook server, so both build requests the same way; ``_find`` finds, watches
and ends the runs that exist.
"""

from __future__ import annotations

import csv
import os
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from stakeflow.agents.budgets import GLOBAL_BUDGET, RUN_BUDGET, BudgetRef, agent_budget, hook_budget
from stakeflow.agents.tools import CATALOGUE
from stakeflow.agents.types import (
    MAX_ROUNDS,
    SENSITIVITY_CHOICES,
    STAKES_CHOICES,
    ApprovalPolicy,
    EvalPolicy,
    ModelEndpoint,
    RoutingConfig,
    TaskRequest,
    TaskResult,
    ToolSpecView,
)
from stakeflow.config import AgentConfig, Settings, resolve_tools
from stakeflow.core.contracts import (
    AGENT_WORKFLOW,
    QueueRole,
    queue_name,
)
from stakeflow.core.errors import InputError, RunFailed
from stakeflow.services.runs._find import failure_status, failure_text
from stakeflow.stores.promotions import learn_dir, promoted_model

RUN_TIMEOUT_HINT = "see `stakeflow status RUN_ID`"


def routing_config(settings: Settings) -> RoutingConfig:
    """The routing facts the policy needs, from settings (no secrets)."""
    return RoutingConfig(
        open=ModelEndpoint(route="open", model=settings.open_model_id, provider="openai-compatible", available=True),
        frontier=ModelEndpoint(
            route="frontier",
            model=settings.frontier_model,
            provider="anthropic",
            available=settings.frontier_configured,
        ),
        escalate_on_invalid=settings.policy.escalate_on_invalid,
        fallback_on_unavailable=settings.policy.fallback_on_unavailable,
        model_max_attempts=settings.policy.model_max_attempts,
        model_retry_initial_s=settings.policy.model_retry_initial_s,
        downgrade_when_frontier_missing=settings.policy.on_frontier_missing == "downgrade",
        open_attempts=settings.policy.open_attempts,
        high_risk=settings.policy.high_risk,
        private_tools=settings.policy.private_tools,
        private_egress=settings.policy.private_egress,
        first_step_reads=_for_small_models(settings.policy.first_step_reads, settings),
        sql_grammar=_for_small_models(settings.policy.sql_grammar, settings),
        calculator_grammar=_for_small_models(settings.policy.calculator_grammar, settings),
        min_agreement=settings.policy.min_agreement,
        min_samples=settings.policy.min_samples,
        open_local=settings.workers.local_model_calls,
        max_rounds=settings.policy.max_rounds,
        escalate_when_stuck=settings.policy.escalate_when_stuck,
        replan=settings.policy.replan,
        check_answer=settings.policy.check_answer,
    )


def agent_config(settings: Settings, agent: str | None) -> AgentConfig | None:
    """The named agent's configuration; InputError listing the agents when there is no such one."""
    if agent is None:
        return None
    if agent not in settings.agents:
        known = ", ".join(sorted(settings.agents)) or "none configured"
        raise InputError(f"unknown agent '{agent}': add [agents.{agent}] to {settings.config_path} (agents: {known})")
    return settings.agents[agent]


def build_request(
    settings: Settings,
    goal: str,
    *,
    stakes: str | None = None,
    sensitivity: str | None = None,
    tools: list[str] | None = None,
    workspace: str | Path | None = None,
    source: str = "cli",
    max_steps: int | None = None,
    max_rounds: int | None = None,
    budget_tokens: int | None = None,
    auto_approve: bool = False,
    agent: str | None = None,
    budget_usd: float | None = None,
) -> TaskRequest:
    """A validated TaskRequest; InputError naming the fix for anything wrong.

    With ``agent``, its configuration fills in what the caller did not say (stakes, sensitivity, tools,
    max steps, budget, open model); what the caller says wins. ``budget_usd`` is the run's ``run_usd`` (the
    frontier spend it may make), over ``[budgets] run_usd``.
    """
    named = agent_config(settings, agent)
    if named is not None:
        stakes = stakes or named.stakes
        sensitivity = sensitivity or named.sensitivity
        tools = tools if tools is not None else named.tools
        max_steps = max_steps or named.max_steps
        max_rounds = max_rounds or named.max_rounds
        budget_tokens = budget_tokens or named.budget_tokens
    stakes = stakes or "auto"
    sensitivity = sensitivity or "public"
    goal = goal.strip()
    if not goal:
        raise InputError(
            'the goal is empty: say what the task should achieve, e.g. stakeflow run "Summarise notes.txt"'
        )
    if stakes not in STAKES_CHOICES:
        raise InputError(f"unknown stakes '{stakes}': use one of {', '.join(STAKES_CHOICES)}")
    if sensitivity not in SENSITIVITY_CHOICES:
        raise InputError(f"unknown sensitivity '{sensitivity}': use one of {', '.join(SENSITIVITY_CHOICES)}")
    if max_rounds is not None and not 1 <= max_rounds <= MAX_ROUNDS:
        raise InputError(f"--max-rounds {max_rounds} is out of range: use 1 to {MAX_ROUNDS}")
    chosen = resolve_tools(
        settings,
        tools,
        where=f"agent {agent}" if named and tools is named.tools else "--tools",
        distrust=distrust_of(named, agent),
    )
    ws = Path(workspace).expanduser() if workspace else settings.default_workspace
    if workspace and not ws.is_dir():
        raise InputError(f"workspace {ws} is not a folder: create it or pass another --workspace")
    ws.mkdir(parents=True, exist_ok=True)
    frontier_missing = stakes == "high" and sensitivity == "public" and not settings.frontier_configured
    if frontier_missing and settings.policy.on_frontier_missing == "fail":
        raise InputError(
            "--stakes high needs the frontier model but ANTHROPIC_API_KEY is not set: export it, "
            "or run with --stakes low"
        )
    survey = survey_workspace(ws)
    return TaskRequest(
        workspace_files=survey.files,
        workspace_paths=survey.paths,
        workspace_tables=survey.tables,
        tool_specs=[_private(CATALOGUE[name].view(), settings) for name in chosen.builtins],
        toolsets=chosen.toolsets,
        agent=agent or "",
        instructions=named.instructions if named else "",
        evals=EvalPolicy(
            shadow_rate=settings.evals.shadow_rate if settings.frontier_configured else 0.0,
            max_usd_per_day=settings.evals.max_usd_per_day,
            judge_model=settings.evals.judge_model or "",
            capture=settings.evals.capture or settings.dataset.capture,
            include_private=settings.dataset.include_private,
        ),
        goal=goal,
        stakes=stakes,
        sensitivity=sensitivity,
        tools=chosen.builtins,
        workspace=str(ws.resolve()),
        max_steps=max_steps or settings.policy.max_steps,
        budget_tokens=budget_tokens,
        source=source,
        routing=_agent_routing(settings, routing_config(settings), agent, max_rounds),
        queue_prefix=settings.queue_prefix,
        approvals=ApprovalPolicy(
            risks=settings.approvals.risks, timeout_s=settings.approvals.timeout_s, auto_approve=auto_approve
        ),
        budgets=budget_refs(settings, agent, source, budget_usd),
    )


def distrust_of(named: AgentConfig | None, agent: str | None) -> str:
    """Why the agent's runs believe no MCP server's annotations (``trust_annotations = false``), or ""."""
    return f"agent {agent}: trust_annotations = false" if named is not None and not named.trust_annotations else ""


def budget_refs(settings: Settings, agent: str | None, source: str, budget_usd: float | None = None) -> list[BudgetRef]:
    """The frontier budgets a run's frontier calls draw on (agents/budgets.py): the day's for all runs, its agent's
    and its hook's, and its own ``run_usd``; each with what it does when spent."""
    b = settings.budgets
    refs: list[BudgetRef] = []
    if b.frontier_usd_per_day is not None:
        refs.append(
            BudgetRef(
                name=GLOBAL_BUDGET,
                limit_usd=b.frontier_usd_per_day,
                on_exceeded=b.frontier_on_exceeded or b.on_exceeded,
            )
        )
    named = settings.agents.get(agent) if agent else None
    if named is not None and named.usd_per_day is not None:
        refs.append(
            BudgetRef(
                name=agent_budget(agent or ""),
                limit_usd=named.usd_per_day,
                on_exceeded=named.on_exceeded or b.on_exceeded,
            )
        )
    hook = settings.hooks.get(source)
    if hook is not None and hook.usd_per_day is not None:
        refs.append(
            BudgetRef(
                name=hook_budget(source), limit_usd=hook.usd_per_day, on_exceeded=hook.on_exceeded or b.on_exceeded
            )
        )
    if budget_usd is not None and (budget_usd != budget_usd or budget_usd < 0):
        raise InputError(
            f"--budget-usd {budget_usd}: give the run's frontier spend limit in US dollars, e.g. --budget-usd 0.50"
        )
    run_usd = budget_usd if budget_usd is not None else b.run_usd
    if run_usd is not None:
        refs.append(
            BudgetRef(name=RUN_BUDGET, limit_usd=run_usd, on_exceeded=b.run_on_exceeded or b.on_exceeded, scope="run")
        )
    return refs


def _private(view: ToolSpecView, settings: Settings) -> ToolSpecView:
    """A built-in tool listed in ``[policy] private_tools`` reads private data."""
    return view.model_copy(update={"private": True}) if view.name in settings.policy.private_tools else view


def open_models(settings: Settings, agent: str | None) -> tuple[str, str]:
    """(the open model the agent's runs use, the configured one): a learn-loop promotion stands in for the
    configured model ([agents.<name>] open_model, else the open endpoint's model) until the configuration changes."""
    named = agent_config(settings, agent)
    configured = named.open_model if named is not None and named.open_model else settings.open_model_id
    promoted = promoted_model(learn_dir(settings), agent, configured)
    return (promoted.open_model if promoted is not None else configured), configured


def _agent_routing(
    settings: Settings, routing: RoutingConfig, agent: str | None, max_rounds: int | None
) -> RoutingConfig:
    """The run's open model (the agent's own, e.g. a fine-tuned adapter served by vLLM, or a promoted one) and
    rounds per step (--max-rounds, the agent's, else [policy])."""
    model, _ = open_models(settings, agent)
    if max_rounds is not None:
        routing = routing.model_copy(update={"max_rounds": max_rounds})
    if model == routing.open.model:
        return routing
    return routing.model_copy(update={"open": routing.open.model_copy(update={"model": model})})


def _for_small_models(rule: str, settings: Settings) -> bool:
    """A constraint [policy] sets to "auto" (the embedded model only), "always" or "never", resolved."""
    return rule == "always" or (rule == "auto" and settings.embedded)


MAX_LISTED_FILES = 40
MAX_ENUM_FILES = 200


def _workspace_files(folder: Path):
    """(relative path, size) of each non-hidden file, sorted; symlinked folders are not followed, and a link that
    leads out of the workspace is not listed (the file tools would refuse it: a model must not be offered it)."""
    real = folder.resolve()
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root) / name
            if name.startswith(".") or not path.is_file():  # is_file: False for a symlink loop
                continue
            if path.is_symlink() and not path.resolve().is_relative_to(real):
                continue
            try:
                size = path.stat().st_size
            except OSError:
                continue
            yield path.relative_to(folder).as_posix(), size


@dataclass(frozen=True)
class WorkspaceSurvey:
    """What a run's input says about its workspace, from one walk of it (each table's header read once)."""

    # As prompts show them, at most MAX_LISTED_FILES: "notes.txt (582 bytes)", "sales.csv (385 bytes; columns:
    # date, region, units)", so a model writes SQL with the real names; "(more files not listed)" past that.
    files: list[str]
    # Every file's workspace-relative path, or [] past MAX_ENUM_FILES: a partial list is useless as a constraint
    # (the file the goal names might be cut), so all or none.
    paths: list[str]
    # Each CSV or TSV file's column names by path (at most MAX_COLUMNS: a wider table is left out), or {} past
    # MAX_ENUM_FILES: the SQL a small model may write (agents/sql_grammar.py).
    tables: dict[str, list[str]]


def survey_workspace(folder: Path, listed: int = MAX_LISTED_FILES, enum: int = MAX_ENUM_FILES) -> WorkspaceSurvey:
    """The workspace's files, paths and tables (see WorkspaceSurvey), walking at most ``max(listed, enum) + 1``
    files once."""
    files: list[str] = []
    paths: list[str] = []
    tables: dict[str, list[str]] = {}
    for n, (rel, size) in enumerate(_workspace_files(folder)):
        if n == enum:
            paths, tables = [], {}
        if n == listed:
            files.append("(more files not listed)")
        if n >= max(listed, enum):
            break
        names = _column_names(folder / rel)
        if n < listed:
            columns = _shown(names)
            files.append(f"{rel} ({size} bytes; columns: {columns})" if columns else f"{rel} ({size} bytes)")
        if n < enum:
            paths.append(rel)
            if 0 < len(names) <= MAX_COLUMNS:
                tables[rel] = names
    return WorkspaceSurvey(files, paths, tables)


def list_workspace(folder: Path, limit: int = MAX_LISTED_FILES) -> list[str]:
    """The workspace's files as prompts show them (WorkspaceSurvey.files)."""
    return survey_workspace(folder, listed=limit, enum=0).files


def workspace_tables(folder: Path, limit: int = MAX_ENUM_FILES) -> dict[str, list[str]]:
    """Each CSV or TSV file's column names by path (WorkspaceSurvey.tables)."""
    return survey_workspace(folder, listed=0, enum=limit).tables


def workspace_paths(folder: Path, limit: int = MAX_ENUM_FILES) -> list[str]:
    """Every file's workspace-relative path, or [] when there are more than ``limit`` (WorkspaceSurvey.paths)."""
    return survey_workspace(folder, listed=0, enum=limit).paths


MAX_HEADER_BYTES = 4096
MAX_COLUMNS = 30


def _shown(names: list[str]) -> str:
    """A table's column names as prompts show them ("" for a file that is no table)."""
    shown = ", ".join(names[:MAX_COLUMNS])
    return shown + (f", … ({len(names) - MAX_COLUMNS} more)" if len(names) > MAX_COLUMNS else "")


def _column_names(path: Path) -> list[str]:
    """A CSV or TSV file's column names from its first line ([] for other files, or one that cannot be read)."""
    delimiter = {".csv": ",", ".tsv": "\t"}.get(path.suffix.lower())
    if delimiter is None:
        return []
    try:
        with path.open(encoding="utf-8", errors="replace", newline="") as f:
            first = f.readline(MAX_HEADER_BYTES)
    except OSError:
        return []
    return [n.strip() for n in next(csv.reader([first], delimiter=delimiter), []) if n.strip()]


def new_workflow_id() -> str:
    return f"task-{uuid.uuid4().hex[:10]}"


async def has_poller(client: Client, settings: Settings, role: QueueRole) -> bool:
    """True when some worker polls the queue of ``role`` (workflow tasks for "workflows", else activities)."""
    kind = TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW if role == "workflows" else TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
    req = DescribeTaskQueueRequest(
        namespace=settings.temporal_namespace,
        task_queue=TaskQueue(name=queue_name(role, settings.queue_prefix)),
        task_queue_type=kind,
    )
    resp = await client.workflow_service.describe_task_queue(req)
    return len(resp.pollers) > 0


async def has_workflow_poller(client: Client, settings: Settings) -> bool:
    """True when some worker polls the workflows queue."""
    return await has_poller(client, settings, "workflows")


async def start_run(
    client: Client,
    settings: Settings,
    req: TaskRequest,
    workflow_id: str | None = None,
    *,
    join_running: bool = True,
    rpc_timeout: timedelta | None = None,
) -> WorkflowHandle:
    """Start AgentTaskWorkflow under ``workflow_id`` (default: a new one); a workflow id is never reused.

    A workflow id that is already running is joined, not duplicated; with ``join_running=False`` the
    start is refused instead (WorkflowAlreadyStartedError), which is how the webhook server knows a
    redelivery.
    """
    wf_id = workflow_id or new_workflow_id()
    return await client.start_workflow(
        AGENT_WORKFLOW,
        req,
        id=wf_id,
        task_queue=queue_name("workflows", settings.queue_prefix),
        result_type=TaskResult,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING if join_running else WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        static_summary=run_summary(req.goal),
        static_details=run_details(settings, req),
        rpc_timeout=rpc_timeout,
    )


def run_summary(goal: str, limit: int = 120) -> str:
    """The goal on one line, truncated: the run's static summary in the Web UI."""
    one_line = " ".join(goal.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def run_details(settings: Settings, req: TaskRequest) -> str:
    """Policy and endpoints in use (no secrets): the run's static details in the Web UI."""
    r = req.routing
    frontier = f"{r.frontier.model}" if r.frontier.available else "not configured"
    return "\n".join(
        [
            f"**stakes** {req.stakes} · **sensitivity** {req.sensitivity} · **source** {req.source}",
            f"**open** {r.open.model} ({settings.dialect}) · **frontier** {frontier}",
            f"**tools** {', '.join(req.tools) or 'none'}",
            f"**escalation** {'on' if r.escalate_on_invalid else 'off'} after {r.open_attempts} invalid open answers",
        ]
    )


async def wait_result(handle: WorkflowHandle) -> TaskResult:
    """The run's result, or RunFailed with the reason."""
    try:
        return await handle.result()
    except WorkflowFailureError as e:
        raise RunFailed(failure_text(e.cause), failure_status(e.cause)) from None
